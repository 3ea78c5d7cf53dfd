// Shown when the server refuses requests for want of an access token: paste one, and the
// dashboard sends it from then on (it is kept in this browser).

import { useEffect, useState } from 'react';
import { onTokenNeeded, readToken, saveToken } from '../api/token';

export function TokenForm() {
  const [needed, setNeeded] = useState(false);
  const [text, setText] = useState('');
  useEffect(() => onTokenNeeded(() => setNeeded(true)), []);
  if (!needed) return null;
  const hadToken = readToken() !== '';
  return (
    <form
      className="token-form"
      data-testid="token-form"
      onSubmit={(event) => {
        event.preventDefault();
        saveToken(text.trim());
        window.location.reload();
      }}
    >
      <label htmlFor="access-token">
        {hadToken
          ? 'The server did not accept the access token this browser sent. Paste a valid one:'
          : 'This server needs an access token (one of its [auth] tokens). Paste it here:'}
      </label>
      <input
        id="access-token"
        type="password"
        autoComplete="off"
        value={text}
        onChange={(event) => setText(event.target.value)}
        placeholder="access token"
      />
      <button type="submit" disabled={text.trim() === ''}>
        Use this token
      </button>
    </form>
  );
}
