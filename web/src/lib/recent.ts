// Merchants recently opened in this browser, offered when the search box is empty.

const STORAGE_KEY = 'mm-recent-merchants';
const KEEP = 6;

export function readRecentMerchants(): string[] {
  try {
    const parsed: unknown = JSON.parse(window.localStorage.getItem(STORAGE_KEY) ?? '[]');
    return Array.isArray(parsed) ? parsed.filter((item): item is string => typeof item === 'string').slice(0, KEEP) : [];
  } catch {
    return [];
  }
}

export function rememberMerchant(merchant: string): void {
  try {
    const next = [merchant, ...readRecentMerchants().filter((item) => item !== merchant)].slice(0, KEEP);
    window.localStorage.setItem(STORAGE_KEY, JSON.stringify(next));
  } catch {
    // Storage off: the box simply offers no recent merchants.
  }
}
