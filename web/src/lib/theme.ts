// Light and dark. The choice ("auto" follows the system) is kept in localStorage; the resolved
// theme is set as data-theme on <html>, where the stylesheet's colour variables hang off it.
// index.html applies the stored choice before the first paint so there is no flash.

import { useLayoutEffect, useSyncExternalStore } from 'react';

export type ThemeChoice = 'auto' | 'light' | 'dark';
export type Theme = 'light' | 'dark';

const STORAGE_KEY = 'mm-theme';
const CHANGE_EVENT = 'mm:theme';

export function readChoice(): ThemeChoice {
  try {
    const stored = window.localStorage.getItem(STORAGE_KEY);
    if (stored === 'light' || stored === 'dark') return stored;
  } catch {
    // Storage can be off (private windows, policies); "auto" is right then.
  }
  return 'auto';
}

export function saveChoice(choice: ThemeChoice): void {
  try {
    if (choice === 'auto') window.localStorage.removeItem(STORAGE_KEY);
    else window.localStorage.setItem(STORAGE_KEY, choice);
  } catch {
    // Not remembered across visits, still applied now.
  }
  window.dispatchEvent(new Event(CHANGE_EVENT));
}

function systemPrefersDark(): boolean {
  return window.matchMedia?.('(prefers-color-scheme: dark)').matches ?? false;
}

export function resolveTheme(choice: ThemeChoice, prefersDark: boolean): Theme {
  if (choice === 'auto') return prefersDark ? 'dark' : 'light';
  return choice;
}

/** The next choice of the theme button: auto → light → dark → auto. */
export function nextChoice(choice: ThemeChoice): ThemeChoice {
  return choice === 'auto' ? 'light' : choice === 'light' ? 'dark' : 'auto';
}

function subscribe(onChange: () => void): () => void {
  const media = window.matchMedia?.('(prefers-color-scheme: dark)');
  media?.addEventListener?.('change', onChange);
  window.addEventListener(CHANGE_EVENT, onChange);
  window.addEventListener('storage', onChange);
  return () => {
    media?.removeEventListener?.('change', onChange);
    window.removeEventListener(CHANGE_EVENT, onChange);
    window.removeEventListener('storage', onChange);
  };
}

function snapshot(): string {
  const choice = readChoice();
  return `${choice}:${resolveTheme(choice, systemPrefersDark())}`;
}

/** The user's choice and the theme in effect; keeps <html data-theme> in step. */
export function useTheme(): { choice: ThemeChoice; theme: Theme } {
  const value = useSyncExternalStore(subscribe, snapshot, snapshot);
  const [choice, theme] = value.split(':') as [ThemeChoice, Theme];
  // A layout effect runs before any child's effect, so charts that read colour variables when
  // they rebuild for the new theme already see its values.
  useLayoutEffect(() => {
    document.documentElement.dataset.theme = theme;
  }, [theme]);
  return { choice, theme };
}
