// The shell: a header with navigation, the search box and the theme switch; the page the path
// names below it.

import { MerchantSearch } from './components/MerchantSearch';
import { TokenForm } from './components/TokenForm';
import { relativePeriod, type Period } from './lib/period';
import { nextChoice, saveChoice, useTheme, type ThemeChoice } from './lib/theme';
import { lookupHref, matchRoute, merchantHref, merchantViewFor, overviewHref, parsePeriodParams } from './lib/urlState';
import { EventTypePage } from './pages/EventTypePage';
import { EventTypesPage } from './pages/EventTypesPage';
import { LookupPage } from './pages/LookupPage';
import { MerchantPage } from './pages/MerchantPage';
import { OverviewPage } from './pages/OverviewPage';
import { Link, navigate, useLocation } from './router';

const THEME_LABELS: Record<ThemeChoice, string> = {
  auto: 'Theme: system',
  light: 'Theme: light',
  dark: 'Theme: dark',
};

const THEME_ICONS: Record<ThemeChoice, string> = { auto: '◐', light: '☀', dark: '☾' };

export function App() {
  const location = useLocation();
  const { choice, theme } = useTheme();
  const route = matchRoute(location.pathname);

  // Moving between pages keeps the period that is on screen.
  const params = new URLSearchParams(location.search);
  const periodOnScreen = parsePeriodParams(params);
  const carriedPeriod: Period =
    route.page !== 'lookup' && route.page !== 'event-types' && route.page !== 'event-type' && periodOnScreen.ok
      ? periodOnScreen.value
      : relativePeriod('1h')!;

  return (
    <div className="app">
      <header className="app-header">
        <Link to="/" className="brand" aria-label="Merchant Monitor overview">
          <span className="brand-mark" aria-hidden="true">
            ▮▮
          </span>
          Merchant Monitor
        </Link>
        <nav className="app-nav" aria-label="Pages">
          <Link to={overviewHref(carriedPeriod)} aria-current={route.page === 'overview' ? 'page' : undefined}>
            Overview
          </Link>
          <Link to="/events" aria-current={route.page === 'lookup' ? 'page' : undefined}>
            Look up a call
          </Link>
          <Link
            to="/event-types"
            aria-current={route.page === 'event-types' || route.page === 'event-type' ? 'page' : undefined}
          >
            Event types
          </Link>
        </nav>
        <MerchantSearch
          initialText={route.page === 'merchant' ? route.merchant : ''}
          onSelectMerchant={(merchant) => navigate(merchantHref(merchantViewFor(merchant, carriedPeriod)))}
          onLookup={(corrId) => navigate(lookupHref(corrId))}
        />
        <button
          type="button"
          className="theme-toggle"
          onClick={() => saveChoice(nextChoice(choice))}
          title={`${THEME_LABELS[choice]} (click to change)`}
          aria-label={`${THEME_LABELS[choice]}; change theme`}
        >
          <span aria-hidden="true">{THEME_ICONS[choice]}</span>
        </button>
      </header>
      <TokenForm />
      <main className="app-main">
        {route.page === 'overview' ? <OverviewPage search={location.search} /> : null}
        {route.page === 'merchant' ? (
          <MerchantPage key={route.merchant} merchant={route.merchant} search={location.search} theme={theme} />
        ) : null}
        {route.page === 'lookup' ? <LookupPage corrId={route.corrId} search={location.search} /> : null}
        {route.page === 'event-types' ? <EventTypesPage /> : null}
        {route.page === 'event-type' ? <EventTypePage key={route.name} name={route.name} /> : null}
        {route.page === 'not-found' ? (
          <div className="page">
            <h1 className="page-title">Nothing here</h1>
            <p>
              There is no page at <code>{location.pathname}</code>. Go to the <Link to="/">overview</Link>, or search for a
              merchant above.
            </p>
          </div>
        ) : null}
      </main>
    </div>
  );
}
