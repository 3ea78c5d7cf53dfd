// A line diff of two JSON documents, for comparing schema versions: both printed with sorted
// keys and two-space indents, then the longest common subsequence of their lines.

export type DiffLine = { kind: 'same' | 'added' | 'removed'; text: string };

/** `value` as indented JSON with every object's keys sorted, so key order never shows as a change. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value), null, 2);
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([left], [right]) =>
      left < right ? -1 : left > right ? 1 : 0,
    );
    return Object.fromEntries(entries.map(([key, inner]) => [key, sortKeys(inner)]));
  }
  return value;
}

/** The lines of `after` against `before`: kept, added and removed, in reading order. */
export function diffJson(before: unknown, after: unknown): DiffLine[] {
  const left = canonicalJson(before).split('\n');
  const right = canonicalJson(after).split('\n');
  // lengths[i][j]: the longest common subsequence of left[i..] and right[j..].
  const lengths: number[][] = Array.from({ length: left.length + 1 }, () => new Array<number>(right.length + 1).fill(0));
  for (let i = left.length - 1; i >= 0; i -= 1) {
    for (let j = right.length - 1; j >= 0; j -= 1) {
      lengths[i]![j] =
        left[i] === right[j] ? lengths[i + 1]![j + 1]! + 1 : Math.max(lengths[i + 1]![j]!, lengths[i]![j + 1]!);
    }
  }
  const lines: DiffLine[] = [];
  let i = 0;
  let j = 0;
  while (i < left.length && j < right.length) {
    if (left[i] === right[j]) {
      lines.push({ kind: 'same', text: left[i]! });
      i += 1;
      j += 1;
    } else if (lengths[i + 1]![j]! >= lengths[i]![j + 1]!) {
      lines.push({ kind: 'removed', text: left[i]! });
      i += 1;
    } else {
      lines.push({ kind: 'added', text: right[j]! });
      j += 1;
    }
  }
  for (; i < left.length; i += 1) lines.push({ kind: 'removed', text: left[i]! });
  for (; j < right.length; j += 1) lines.push({ kind: 'added', text: right[j]! });
  return lines;
}
