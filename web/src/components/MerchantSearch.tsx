// The search box: a merchant account with suggestions from the server's name index, or a pasted
// correlation id. Keyboard: ↑/↓ to move, Enter to open, Escape to close.

import { useEffect, useId, useRef, useState, type KeyboardEvent } from 'react';
import { searchMerchants } from '../api/client';
import { readRecentMerchants } from '../lib/recent';

const SUGGESTION_LIMIT = 8;
const DEBOUNCE_MS = 120;

/** Correlation ids are long hex (or UUID-like) strings; merchant accounts are not. */
export function looksLikeCorrelationId(text: string): boolean {
  return /^[0-9a-f][0-9a-f-]{15,}$/i.test(text.trim()) && /\d/.test(text);
}

type Option =
  | { kind: 'merchant'; merchant: string }
  | { kind: 'lookup'; corrId: string };

interface MerchantSearchProps {
  onSelectMerchant: (merchant: string) => void;
  onLookup: (corrId: string) => void;
  /** Text to start with, e.g. the merchant on screen. */
  initialText?: string;
  autoFocus?: boolean;
  label?: string;
}

export function MerchantSearch({
  onSelectMerchant,
  onLookup,
  initialText = '',
  autoFocus = false,
  label = 'Merchant account or correlation id',
}: MerchantSearchProps) {
  const listId = useId();
  const inputRef = useRef<HTMLInputElement>(null);
  const [text, setText] = useState(initialText);
  const [open, setOpen] = useState(false);
  const [suggestions, setSuggestions] = useState<string[]>([]);
  const [suggestionsFor, setSuggestionsFor] = useState<string | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const [activeIndex, setActiveIndex] = useState(-1);

  useEffect(() => setText(initialText), [initialText]);

  const trimmed = text.trim();

  useEffect(() => {
    if (!open || trimmed === '') return;
    const controller = new AbortController();
    const timer = setTimeout(() => {
      searchMerchants(trimmed, SUGGESTION_LIMIT, controller.signal)
        .then((merchants) => {
          setSuggestions(merchants);
          setSuggestionsFor(trimmed);
          setProblem(null);
        })
        .catch((error: unknown) => {
          if (controller.signal.aborted) return;
          setSuggestions([]);
          setSuggestionsFor(trimmed);
          setProblem(error instanceof Error ? error.message : String(error));
        });
    }, DEBOUNCE_MS);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [trimmed, open]);

  const recent = trimmed === '' ? readRecentMerchants() : [];
  const options: Option[] = [];
  if (trimmed !== '' && looksLikeCorrelationId(trimmed)) options.push({ kind: 'lookup', corrId: trimmed });
  const merchantNames = trimmed === '' ? recent : suggestionsFor === trimmed ? suggestions : [];
  for (const merchant of merchantNames) options.push({ kind: 'merchant', merchant });

  const choose = (option: Option) => {
    setOpen(false);
    setActiveIndex(-1);
    if (option.kind === 'lookup') {
      setText('');
      onLookup(option.corrId);
      return;
    }
    setText(option.merchant);
    onSelectMerchant(option.merchant);
    inputRef.current?.blur();
  };

  const submitTyped = () => {
    if (trimmed === '') return;
    const exact = suggestions.find((merchant) => merchant.toLowerCase() === trimmed.toLowerCase());
    if (exact && suggestionsFor === trimmed) {
      choose({ kind: 'merchant', merchant: exact });
      return;
    }
    if (looksLikeCorrelationId(trimmed)) {
      choose({ kind: 'lookup', corrId: trimmed });
      return;
    }
    choose({ kind: 'merchant', merchant: trimmed });
  };

  const onKeyDown = (event: KeyboardEvent<HTMLInputElement>) => {
    if (event.key === 'ArrowDown') {
      event.preventDefault();
      setOpen(true);
      setActiveIndex((index) => (options.length === 0 ? -1 : (index + 1) % options.length));
    } else if (event.key === 'ArrowUp') {
      event.preventDefault();
      setActiveIndex((index) => (options.length === 0 ? -1 : index <= 0 ? options.length - 1 : index - 1));
    } else if (event.key === 'Enter') {
      event.preventDefault();
      const active = open ? options[activeIndex] : undefined;
      if (active) choose(active);
      else submitTyped();
    } else if (event.key === 'Escape') {
      setOpen(false);
      setActiveIndex(-1);
    }
  };

  const showList = open && (options.length > 0 || problem !== null || (trimmed !== '' && suggestionsFor === trimmed));
  const optionId = (index: number) => `${listId}-option-${index}`;

  return (
    <div className="search">
      <input
        ref={inputRef}
        type="search"
        className="search-input"
        role="combobox"
        aria-label={label}
        aria-autocomplete="list"
        aria-expanded={showList}
        aria-controls={listId}
        aria-activedescendant={showList && activeIndex >= 0 ? optionId(activeIndex) : undefined}
        placeholder="Merchant account or correlation id…"
        autoComplete="off"
        spellCheck={false}
        autoFocus={autoFocus}
        value={text}
        onChange={(event) => {
          setText(event.target.value);
          setOpen(true);
          setActiveIndex(-1);
        }}
        onFocus={() => setOpen(true)}
        onBlur={() => setOpen(false)}
        onKeyDown={onKeyDown}
      />
      {showList ? (
        <ul className="search-list" role="listbox" id={listId} aria-label="Suggestions">
          {trimmed === '' && recent.length > 0 ? (
            <li className="search-note" role="presentation">
              Recently viewed
            </li>
          ) : null}
          {options.map((option, index) => (
            <li
              key={option.kind === 'merchant' ? `m:${option.merchant}` : `c:${option.corrId}`}
              id={optionId(index)}
              role="option"
              aria-selected={index === activeIndex}
              className="search-option"
              onMouseDown={(event) => event.preventDefault()}
              onClick={() => choose(option)}
              onMouseEnter={() => setActiveIndex(index)}
            >
              {option.kind === 'merchant' ? (
                <HighlightedPrefix text={option.merchant} prefix={trimmed} />
              ) : (
                <>
                  Look up the call with correlation id <code>{option.corrId}</code>
                </>
              )}
            </li>
          ))}
          {problem ? (
            <li className="search-note problem" role="presentation">
              {problem}
            </li>
          ) : trimmed !== '' && suggestionsFor === trimmed && merchantNames.length === 0 ? (
            <li className="search-note" role="presentation">
              No known merchant starts with “{trimmed}”.
            </li>
          ) : null}
        </ul>
      ) : null}
    </div>
  );
}

function HighlightedPrefix({ text, prefix }: { text: string; prefix: string }) {
  if (prefix === '' || !text.toLowerCase().startsWith(prefix.toLowerCase())) return <>{text}</>;
  return (
    <>
      <mark>{text.slice(0, prefix.length)}</mark>
      {text.slice(prefix.length)}
    </>
  );
}
