import { act, fireEvent, render, screen, waitFor } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { installFakeServer } from '../test/fakeServer';
import { looksLikeCorrelationId, MerchantSearch } from './MerchantSearch';

afterEach(() => {
  vi.unstubAllGlobals();
  window.localStorage.clear();
});

const known = ['AcmeAuto556US', 'AcmeFoods120EU', 'DuffMobility718APP'];

function serveSearch() {
  return installFakeServer({
    '/v1/merchants/search': (url) => {
      const prefix = (url.searchParams.get('prefix') ?? '').toLowerCase();
      return { body: { merchants: known.filter((name) => name.toLowerCase().startsWith(prefix)), prefix } };
    },
  });
}

describe('MerchantSearch', () => {
  it('suggests known merchants as you type and opens the one clicked', async () => {
    serveSearch();
    const onSelectMerchant = vi.fn();
    render(<MerchantSearch onSelectMerchant={onSelectMerchant} onLookup={vi.fn()} />);
    const input = screen.getByRole('combobox');
    fireEvent.focus(input);
    fireEvent.change(input, { target: { value: 'acme' } });
    const options = await screen.findAllByRole('option');
    expect(options.map((option) => option.textContent)).toEqual(['AcmeAuto556US', 'AcmeFoods120EU']);
    fireEvent.click(options[1]!);
    expect(onSelectMerchant).toHaveBeenCalledWith('AcmeFoods120EU');
  });

  it('moves through suggestions with the arrow keys and opens with Enter', async () => {
    serveSearch();
    const onSelectMerchant = vi.fn();
    render(<MerchantSearch onSelectMerchant={onSelectMerchant} onLookup={vi.fn()} />);
    const input = screen.getByRole('combobox');
    fireEvent.focus(input);
    fireEvent.change(input, { target: { value: 'a' } });
    await screen.findAllByRole('option');
    fireEvent.keyDown(input, { key: 'ArrowDown' });
    fireEvent.keyDown(input, { key: 'ArrowDown' });
    expect(screen.getAllByRole('option', { selected: true }).map((option) => option.textContent)).toEqual(['AcmeFoods120EU']);
    fireEvent.keyDown(input, { key: 'Enter' });
    expect(onSelectMerchant).toHaveBeenCalledWith('AcmeFoods120EU');
  });

  it('opens the exact merchant typed in another case on Enter', async () => {
    serveSearch();
    const onSelectMerchant = vi.fn();
    render(<MerchantSearch onSelectMerchant={onSelectMerchant} onLookup={vi.fn()} />);
    const input = screen.getByRole('combobox');
    fireEvent.focus(input);
    fireEvent.change(input, { target: { value: 'duffmobility718app' } });
    await screen.findAllByRole('option');
    fireEvent.keyDown(input, { key: 'Enter' });
    expect(onSelectMerchant).toHaveBeenCalledWith('DuffMobility718APP');
  });

  it('says when no merchant matches', async () => {
    serveSearch();
    render(<MerchantSearch onSelectMerchant={vi.fn()} onLookup={vi.fn()} />);
    const input = screen.getByRole('combobox');
    fireEvent.focus(input);
    fireEvent.change(input, { target: { value: 'zzz' } });
    expect(await screen.findByText('No known merchant starts with “zzz”.')).toBeTruthy();
  });

  it('offers a correlation id lookup for a pasted id', async () => {
    serveSearch();
    const onLookup = vi.fn();
    render(<MerchantSearch onSelectMerchant={vi.fn()} onLookup={onLookup} />);
    const input = screen.getByRole('combobox');
    fireEvent.focus(input);
    fireEvent.change(input, { target: { value: ' 9ef23f7adda447943b8794948ea202f1 ' } });
    const option = await screen.findByRole('option', { name: /Look up the call/ });
    await act(async () => {
      fireEvent.click(option);
    });
    expect(onLookup).toHaveBeenCalledWith('9ef23f7adda447943b8794948ea202f1');
  });

  it('shows why suggestions are missing when the server is down', async () => {
    vi.stubGlobal('fetch', vi.fn(async () => Promise.reject(new TypeError('Failed to fetch'))));
    render(<MerchantSearch onSelectMerchant={vi.fn()} onLookup={vi.fn()} />);
    const input = screen.getByRole('combobox');
    fireEvent.focus(input);
    fireEvent.change(input, { target: { value: 'acme' } });
    await waitFor(() => expect(screen.getByText(/cannot be reached/)).toBeTruthy());
  });

  it('tells correlation ids from merchant accounts', () => {
    expect(looksLikeCorrelationId('9ef23f7adda447943b8794948ea202f1')).toBe(true);
    expect(looksLikeCorrelationId('8a698641-d3b7-4356-a8d9-d0eb86fd095e')).toBe(true);
    expect(looksLikeCorrelationId('AcmeAuto556US')).toBe(false);
    expect(looksLikeCorrelationId('deadbeef')).toBe(false);
  });
});
