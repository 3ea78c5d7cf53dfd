import { act, fireEvent, render, screen } from '@testing-library/react';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { getJson } from '../api/client';
import { readToken, saveToken } from '../api/token';
import { TokenForm } from './TokenForm';

afterEach(() => {
  saveToken('');
  vi.restoreAllMocks();
});

describe('access token', () => {
  it('is asked for when the server answers 401, and sent once given', async () => {
    const fetchMock = vi
      .fn()
      .mockResolvedValue(
        new Response(JSON.stringify({ error: { code: 'unauthorized', message: 'send a token' } }), { status: 401 }),
      );
    vi.stubGlobal('fetch', fetchMock);
    const reload = vi.fn();
    vi.spyOn(window, 'location', 'get').mockReturnValue({ ...window.location, reload } as Location);
    render(<TokenForm />);
    expect(screen.queryByTestId('token-form')).toBeNull();

    await act(async () => {
      await expect(getJson('/v1/merchants')).rejects.toMatchObject({ kind: 'unauthorized', status: 401 });
    });
    expect(screen.getByTestId('token-form')).toBeTruthy();
    const headers = (fetchMock.mock.calls[0]![1] as RequestInit).headers as Record<string, string>;
    expect(headers.authorization).toBeUndefined();

    fireEvent.change(screen.getByLabelText(/needs an access token/), { target: { value: ' s3cret-token ' } });
    fireEvent.click(screen.getByRole('button', { name: 'Use this token' }));
    expect(readToken()).toBe('s3cret-token');
    expect(reload).toHaveBeenCalled();

    fetchMock.mockResolvedValue(new Response(JSON.stringify({ merchants: [] }), { status: 200 }));
    await getJson('/v1/merchants');
    const sent = (fetchMock.mock.calls[1]![1] as RequestInit).headers as Record<string, string>;
    expect(sent.authorization).toBe('Bearer s3cret-token');
  });
});
