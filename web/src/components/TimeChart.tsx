// A uPlot time-series chart that lives across refreshes.
//
// The uPlot instance is made once per theme and series layout; new data goes in with setData,
// so a live refresh redraws in place without a flash. The tooltip is plain DOM updated from
// uPlot's cursor hook, to keep mouse moves out of React. Click picks a bucket, dragging across
// the plot picks a range.

import { useEffect, useRef, useState } from 'react';
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { logSplits, timeAxisLabels } from '../lib/chartAxes';
import type { Theme } from '../lib/theme';

export interface ChartSeries {
  label: string;
  /** A CSS custom property holding the colour, e.g. "--series-total". */
  colorVar: string;
  values: (number | null)[];
  width?: number;
}

export interface TooltipRow {
  label: string;
  value: string;
  colorVar?: string;
}

export interface TimeChartProps {
  /** Identifies the chart in the DOM (data-chart) and in tests. */
  name: string;
  title: string;
  /** Bucket starts, epoch ms. */
  xs: number[];
  series: ChartSeries[];
  stepMs: number;
  formatValue: (value: number) => string;
  logScale?: boolean;
  theme: Theme;
  /** Charts with the same key share the hover crosshair. */
  syncKey: string;
  /** Bucket title and rows for the tooltip at data index `index`. */
  describeBucket: (index: number) => { title: string; rows: TooltipRow[] };
  /** A click on the plot, with the start of the bucket under the cursor. */
  onPickBucket?: (bucketStartMs: number) => void;
  /** A drag across the plot, snapped to whole buckets. */
  onPickRange?: (fromMs: number, toMs: number) => void;
  /** Extra data-* attributes on the container (the query behind the data). */
  dataAttributes?: Record<string, string | number>;
  /** Shown over the plot when there is nothing to draw. */
  emptyMessage?: string | null;
}

const DRAG_MIN_PX = 6;

function cssVar(element: Element, name: string, fallback: string): string {
  const value = getComputedStyle(element).getPropertyValue(name).trim();
  return value || fallback;
}

export function TimeChart(props: TimeChartProps) {
  const { xs, series, theme, logScale = false, syncKey, stepMs } = props;
  const containerRef = useRef<HTMLDivElement>(null);
  const plotRef = useRef<HTMLDivElement>(null);
  const tooltipRef = useRef<HTMLDivElement>(null);
  const chartRef = useRef<uPlot | null>(null);
  const propsRef = useRef(props);
  propsRef.current = props;
  const [hidden, setHidden] = useState<Set<string>>(() => new Set());
  const hiddenRef = useRef(hidden);
  hiddenRef.current = hidden;

  const layoutKey = `${theme}|${logScale}|${series.map((entry) => entry.label).join(',')}`;

  const chartData = (): uPlot.AlignedData => [
    xs,
    ...series.map((entry) =>
      logScale ? entry.values.map((value) => (value !== null && value > 0 ? value : null)) : entry.values,
    ),
  ];

  // Build (or rebuild, when the theme or the series change) the uPlot instance.
  useEffect(() => {
    const plotElement = plotRef.current;
    const container = containerRef.current;
    if (!plotElement || !container) return;
    const axisColor = cssVar(container, '--chart-axis', '#666');
    const gridColor = cssVar(container, '--chart-grid', '#eee');
    const formatValue = (value: number) => propsRef.current.formatValue(value);
    let pointerDownX: number | null = null;

    const options: uPlot.Options = {
      width: Math.max(plotElement.clientWidth, 200),
      height: Math.max(plotElement.clientHeight, 120),
      ms: 1,
      legend: { show: false },
      padding: [12, 24, 0, 0],
      cursor: {
        sync: { key: syncKey },
        drag: { x: true, y: false, setScale: false },
        points: { size: 7 },
      },
      scales: {
        x: { time: true },
        y: logScale
          ? {
              distr: 3 as uPlot.Scale.Distr,
              range: (_chart, min, max) => {
                if (min === null || max === null || !Number.isFinite(min) || !Number.isFinite(max)) return [1, 1000];
                const low = 10 ** Math.floor(Math.log10(Math.max(min, 0.1)));
                const high = 10 ** Math.ceil(Math.log10(Math.max(max, low * 10)));
                return [low, high];
              },
            }
          : {
              range: (_chart, _min, max) => [0, max === null || max <= 0 ? 1 : max * 1.08],
            },
      },
      axes: [
        {
          stroke: axisColor,
          grid: { stroke: gridColor, width: 1 },
          ticks: { stroke: gridColor, width: 1 },
          values: (_chart, splits, _axisIndex, _space, increment) => timeAxisLabels(splits, increment),
        },
        {
          stroke: axisColor,
          grid: { stroke: gridColor, width: 1 },
          ticks: { stroke: gridColor, width: 1 },
          size: 64,
          values: (_chart, splits) => splits.map((value) => (value === null ? '' : formatValue(value))),
          ...(logScale ? { splits: (_chart: uPlot, _axisIndex: number, min: number, max: number) => logSplits(min, max) } : {}),
        },
      ],
      series: [
        {},
        ...series.map((entry) => ({
          label: entry.label,
          stroke: cssVar(container, entry.colorVar, '#888'),
          width: entry.width ?? 1.5,
          show: !hiddenRef.current.has(entry.label),
          spanGaps: false,
          points: { show: (chart: uPlot) => chart.data[0].length <= 90, size: 4 },
        })),
      ],
      hooks: {
        setCursor: [(chart) => updateTooltip(chart)],
        setSelect: [
          (chart) => {
            const { left, width } = chart.select;
            if (width >= DRAG_MIN_PX) {
              const onPickRange = propsRef.current.onPickRange;
              const data = chart.data[0];
              if (onPickRange && data.length > 0) {
                const startIndex = chart.posToIdx(left);
                const endIndex = chart.posToIdx(left + width);
                const fromMs = data[Math.max(0, Math.min(startIndex, data.length - 1))]!;
                const lastMs = data[Math.max(0, Math.min(endIndex, data.length - 1))]!;
                onPickRange(fromMs, lastMs + propsRef.current.stepMs);
              }
            }
            chart.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          },
        ],
      },
    };

    const chart = new uPlot(options, chartData(), plotElement);
    chartRef.current = chart;

    const over = chart.over;
    const onPointerDown = (event: MouseEvent) => {
      pointerDownX = event.clientX;
    };
    const onClick = (event: MouseEvent) => {
      const moved = pointerDownX === null ? 0 : Math.abs(event.clientX - pointerDownX);
      pointerDownX = null;
      if (moved >= DRAG_MIN_PX) return;
      const index = chart.cursor.idx;
      const onPickBucket = propsRef.current.onPickBucket;
      if (index === null || index === undefined || !onPickBucket) return;
      const startMs = chart.data[0][index];
      if (startMs !== undefined) onPickBucket(startMs);
    };
    over.addEventListener('mousedown', onPointerDown);
    over.addEventListener('click', onClick);

    const resizeObserver = new ResizeObserver(() => {
      const width = plotElement.clientWidth;
      const height = plotElement.clientHeight;
      if (width > 0 && height > 0 && (width !== chart.width || height !== chart.height)) {
        chart.setSize({ width, height });
      }
    });
    resizeObserver.observe(plotElement);

    return () => {
      resizeObserver.disconnect();
      over.removeEventListener('mousedown', onPointerDown);
      over.removeEventListener('click', onClick);
      chart.destroy();
      chartRef.current = null;
    };
    // chartData and series values are read at build time; later data goes through setData below.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [layoutKey, syncKey]);

  // New data: redraw in place.
  useEffect(() => {
    const chart = chartRef.current;
    if (!chart) return;
    chart.setData(chartData(), true);
    updateTooltip(chart);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [xs, series]);

  // Hidden series (legend clicks).
  useEffect(() => {
    const chart = chartRef.current;
    if (!chart) return;
    series.forEach((entry, index) => {
      const show = !hidden.has(entry.label);
      if (chart.series[index + 1]?.show !== show) chart.setSeries(index + 1, { show });
    });
  }, [hidden, series]);

  function updateTooltip(chart: uPlot) {
    const tooltip = tooltipRef.current;
    if (!tooltip) return;
    const index = chart.cursor.idx;
    const left = chart.cursor.left ?? -1;
    if (index === null || index === undefined || left < 0 || chart.data[0].length === 0) {
      tooltip.hidden = true;
      return;
    }
    const { title, rows } = propsRef.current.describeBucket(index);
    tooltip.replaceChildren();
    const heading = document.createElement('div');
    heading.className = 'tooltip-title';
    heading.textContent = title;
    tooltip.append(heading);
    for (const row of rows) {
      const line = document.createElement('div');
      line.className = 'tooltip-row';
      const swatch = document.createElement('span');
      swatch.className = 'swatch';
      if (row.colorVar) swatch.style.background = `var(${row.colorVar})`;
      const label = document.createElement('span');
      label.className = 'tooltip-label';
      label.textContent = row.label;
      const value = document.createElement('span');
      value.className = 'tooltip-value';
      value.textContent = row.value;
      line.append(swatch, label, value);
      tooltip.append(line);
    }
    if (propsRef.current.onPickBucket) {
      const hint = document.createElement('div');
      hint.className = 'tooltip-hint';
      hint.textContent = 'Click for these calls · drag to zoom';
      tooltip.append(hint);
    }
    tooltip.hidden = false;
    // Keep the tooltip inside the plot: flip it to the left of the cursor past the middle.
    const plotLeft = chart.over.offsetLeft;
    const plotWidth = chart.over.clientWidth;
    const x = plotLeft + left;
    tooltip.style.top = `${chart.over.offsetTop + 8}px`;
    if (left > plotWidth / 2) {
      tooltip.style.left = '';
      tooltip.style.right = `${(plotElementWidth() - x) + 14}px`;
    } else {
      tooltip.style.right = '';
      tooltip.style.left = `${x + 14}px`;
    }
  }

  function plotElementWidth(): number {
    return plotRef.current?.clientWidth ?? 0;
  }

  const toggleSeries = (label: string) => {
    setHidden((previous) => {
      const next = new Set(previous);
      if (next.has(label)) next.delete(label);
      else next.add(label);
      return next;
    });
  };

  const attributes: Record<string, string | number> = {};
  for (const [name, value] of Object.entries(props.dataAttributes ?? {})) attributes[`data-${name}`] = value;

  return (
    <figure
      className="chart"
      ref={containerRef}
      data-chart={props.name}
      data-points={xs.length}
      data-step-ms={stepMs}
      {...attributes}
    >
      <figcaption className="chart-header">
        <span className="chart-title">{props.title}</span>
        <span className="chart-legend">
          {series.map((entry) => (
            <button
              key={entry.label}
              type="button"
              className="legend-item"
              aria-pressed={!hidden.has(entry.label)}
              title={hidden.has(entry.label) ? `Show ${entry.label}` : `Hide ${entry.label}`}
              onClick={() => toggleSeries(entry.label)}
            >
              <span className="swatch" style={{ background: `var(${entry.colorVar})` }} />
              {entry.label}
            </button>
          ))}
        </span>
      </figcaption>
      <div className="chart-plot" ref={plotRef}>
        <div className="chart-tooltip" ref={tooltipRef} hidden role="status" />
        {props.emptyMessage ? <div className="chart-empty">{props.emptyMessage}</div> : null}
      </div>
    </figure>
  );
}
