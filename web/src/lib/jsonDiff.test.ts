import { describe, expect, it } from 'vitest';
import { canonicalJson, diffJson } from './jsonDiff';

describe('diffJson', () => {
  it('shows an added property as added lines and keeps the rest', () => {
    const before = { type: 'object', properties: { id: { type: 'string' } } };
    const after = { properties: { id: { type: 'string' }, note: { type: 'string' } }, type: 'object' };
    const lines = diffJson(before, after);
    const added = lines.filter((line) => line.kind === 'added').map((line) => line.text.trim());
    expect(added).toContain('"note": {');
    // The id property is unchanged: none of its lines is removed.
    expect(lines.some((line) => line.kind === 'removed' && line.text.includes('"id"'))).toBe(false);
    expect(lines.filter((line) => line.kind !== 'same').length).toBeLessThanOrEqual(5);
    // Read back, the kept and added lines are the new document; kept and removed, the old.
    const text = (kinds: string[]) => lines.filter((line) => kinds.includes(line.kind)).map((line) => line.text).join('\n');
    expect(text(['same', 'added'])).toBe(canonicalJson(after));
    expect(text(['same', 'removed'])).toBe(canonicalJson(before));
  });

  it('ignores key order and marks a changed value as removed then added', () => {
    expect(diffJson({ b: 1, a: 2 }, { a: 2, b: 1 }).every((line) => line.kind === 'same')).toBe(true);
    const lines = diffJson({ type: 'number' }, { type: 'integer' });
    expect(lines.map((line) => line.kind)).toEqual(['same', 'removed', 'added', 'same']);
  });
});
