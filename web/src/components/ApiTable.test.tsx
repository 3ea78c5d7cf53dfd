import { fireEvent, render, screen, within } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import type { ApiRow } from '../api/types';
import { ApiTable } from './ApiTable';

const rows: ApiRow[] = [
  {
    api: '/v1/payments',
    calls: 621,
    status: { '201': 590, '400': 3, '402': 27, '500': 1 },
    error_rate: 1 / 621,
    p50_ms: 183.1,
    p95_ms: 468.8,
    p99_ms: 1043.3,
    max_ms: 5067.3,
  },
  {
    api: '/v1/balance',
    calls: 1040,
    status: { '200': 1000, '503': 40 },
    error_rate: 40 / 1040,
    p50_ms: 20,
    p95_ms: 40,
    p99_ms: 90,
    max_ms: 120,
  },
];

function renderTable(overrides: { sort?: { column: string; descending: boolean }; selectedApi?: string | null } = {}) {
  const props = {
    rows,
    onSelectApi: vi.fn<(api: string | null) => void>(),
    onSort: vi.fn(),
    onPickStatus: vi.fn(),
    sort: { column: 'calls', descending: true },
    selectedApi: null as string | null,
    ...overrides,
  };
  render(<ApiTable {...props} />);
  return props;
}

const headerTexts = () =>
  screen.getAllByRole('columnheader').map((header) => header.textContent?.replace(/[▲▼]/g, '').trim());

const apiOrder = () =>
  screen
    .getAllByRole('row')
    .map((row) => row.getAttribute('data-api'))
    .filter((api): api is string => api !== null && api !== '');

describe('ApiTable', () => {
  it('has a column for 200, 500 and every code that occurred', () => {
    renderTable();
    expect(headerTexts()).toEqual(['API', 'Calls', '200', '201', '400', '402', '500', '503', 'Error rate', 'p50', 'p95', 'p99', 'Max']);
  });

  it('shows counts per code, zero where a code did not occur, and totals', () => {
    renderTable();
    const payments = screen.getByRole('row', { name: /\/v1\/payments/ });
    const cell = (code: string) => payments.querySelector(`[data-col="${code}"]`)?.getAttribute('data-value');
    expect(cell('calls')).toBe('621');
    expect(cell('201')).toBe('590');
    expect(cell('200')).toBe('0');
    expect(cell('500')).toBe('1');
    const total = screen.getByRole('row', { name: /All APIs/ });
    expect(total.querySelector('[data-col="calls"]')?.textContent).toBe('1,661');
    expect(total.querySelector('[data-col="503"]')?.getAttribute('data-value')).toBe('40');
    expect(within(payments).getByText('0.16%')).toBeTruthy();
    expect(within(payments).getByText('1,043 ms')).toBeTruthy();
  });

  it('orders rows by the sort it is given', () => {
    renderTable({ sort: { column: 'calls', descending: true } });
    expect(apiOrder()).toEqual(['/v1/balance', '/v1/payments']);
  });

  it('orders by a status code column', () => {
    renderTable({ sort: { column: '402', descending: true } });
    expect(apiOrder()).toEqual(['/v1/payments', '/v1/balance']);
  });

  it('asks for the flipped sort when the sorted header is clicked, and a fresh one for another', () => {
    const props = renderTable();
    fireEvent.click(screen.getByRole('button', { name: /^Calls/ }));
    expect(props.onSort).toHaveBeenLastCalledWith({ column: 'calls', descending: false });
    fireEvent.click(screen.getByRole('button', { name: /^API/ }));
    expect(props.onSort).toHaveBeenLastCalledWith({ column: 'api', descending: false });
    fireEvent.click(screen.getByRole('button', { name: /^p99/ }));
    expect(props.onSort).toHaveBeenLastCalledWith({ column: 'p99', descending: true });
    expect(screen.getByRole('columnheader', { name: /Calls/ }).getAttribute('aria-sort')).toBe('descending');
  });

  it('selects an API on a row click and clears it on a second click', () => {
    const props = renderTable();
    fireEvent.click(screen.getByRole('button', { name: '/v1/payments' }));
    expect(props.onSelectApi).toHaveBeenLastCalledWith('/v1/payments');
    props.onSelectApi.mockClear();
    render(<ApiTable {...props} selectedApi="/v1/payments" />);
    const selected = screen.getAllByRole('row', { selected: true }).find((row) => row.getAttribute('data-api') === '/v1/payments');
    expect(selected).toBeTruthy();
    fireEvent.click(within(selected!).getByRole('button', { name: '/v1/payments' }));
    expect(props.onSelectApi).toHaveBeenLastCalledWith(null);
  });

  it('opens the calls of a status count without selecting the row', () => {
    const props = renderTable();
    const balance = screen.getByRole('row', { name: /\/v1\/balance/ });
    fireEvent.click(within(balance).getByRole('button', { name: '40' }));
    expect(props.onPickStatus).toHaveBeenCalledWith('/v1/balance', 503);
    expect(props.onSelectApi).not.toHaveBeenCalled();
  });
});
