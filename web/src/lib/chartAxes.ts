// Axis ticks and labels for the time charts.

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/**
 * Time-axis labels in local 24-hour time: "17:30", with the date under the first label of each
 * day; only dates when the ticks are a day or more apart.
 */
export function timeAxisLabels(splits: number[], incrementMs: number): string[] {
  let previousDay = '';
  return splits.map((ms) => {
    const date = new Date(ms);
    const day = `${date.getDate()} ${MONTHS[date.getMonth()]}`;
    if (incrementMs >= 86_400_000) return day;
    const clock = `${String(date.getHours()).padStart(2, '0')}:${String(date.getMinutes()).padStart(2, '0')}`;
    const label = day !== previousDay ? `${clock}\n${day}` : clock;
    previousDay = day;
    return label;
  });
}

/**
 * Gridlines of a log axis: every power of ten, and the threes between them when the axis spans
 * few decades (uPlot's default draws all of 2…9 per decade, which is busy).
 */
export function logSplits(min: number, max: number): number[] {
  const low = Math.floor(Math.log10(min));
  const high = Math.ceil(Math.log10(max));
  const splits: number[] = [];
  for (let exponent = low; exponent <= high; exponent += 1) {
    const power = 10 ** exponent;
    if (power >= min && power <= max) splits.push(power);
    if (high - low <= 3 && power * 3 >= min && power * 3 <= max) splits.push(power * 3);
  }
  return splits;
}
