// "Copy link" for the view as it is, and for a moving period also a link pinned to the exact
// times on screen (what an incident note wants).

import { useEffect, useState } from 'react';

async function copyText(text: string): Promise<boolean> {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return true;
    }
  } catch {
    // Fall through to the older way.
  }
  // Plain-HTTP origins have no Clipboard API.
  const area = document.createElement('textarea');
  area.value = text;
  area.setAttribute('readonly', '');
  area.style.position = 'fixed';
  area.style.opacity = '0';
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand('copy');
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}

interface CopyLinkButtonsProps {
  /** Path and query of the same view with a fixed range; null when the view is fixed already. */
  fixedHref: string | null;
}

export function CopyLinkButtons({ fixedHref }: CopyLinkButtonsProps) {
  const [copied, setCopied] = useState<'view' | 'fixed' | 'failed' | null>(null);
  useEffect(() => {
    if (copied === null) return;
    const timer = setTimeout(() => setCopied(null), 2000);
    return () => clearTimeout(timer);
  }, [copied]);

  const copy = async (which: 'view' | 'fixed', href: string) => {
    const ok = await copyText(new URL(href, window.location.origin).toString());
    setCopied(ok ? which : 'failed');
  };

  return (
    <span className="copy-links">
      <button type="button" onClick={() => copy('view', window.location.pathname + window.location.search)}>
        {copied === 'view' ? 'Copied ✓' : 'Copy link'}
      </button>
      {fixedHref ? (
        <button
          type="button"
          title="A link to exactly these times, which will not move on"
          onClick={() => copy('fixed', fixedHref)}
        >
          {copied === 'fixed' ? 'Copied ✓' : 'Copy link to these times'}
        </button>
      ) : null}
      {copied === 'failed' ? <span className="muted">Copy the address bar instead</span> : null}
    </span>
  );
}
