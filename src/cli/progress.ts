import cliProgress from 'cli-progress';
import type { BackfillProgress } from '../core/backfill.js';
import type { CliIo } from './io.js';

/** Seconds between two plain progress lines when stderr is not a terminal. */
const plainLineSeconds = 30;

/** Shows the progress of a backfill on stderr. */
export interface ProgressDisplay {
  update(progress: BackfillProgress): void;
  /** Ends the bar in flight, so that later output starts on a fresh line. */
  stop(): void;
}

function formatRate(rowsPerSecond: number): string {
  return rowsPerSecond >= 100 ? String(Math.round(rowsPerSecond)) : rowsPerSecond.toFixed(1);
}

/**
 * Draws one cli-progress bar per table on stderr, with rows per second and
 * the time remaining, when stderr is a terminal. Otherwise it writes a plain
 * line when a table finishes and at most every 30 seconds while one is
 * walked, so logs of unattended runs show progress without control codes.
 * Nothing goes to stdout.
 */
export function progressDisplay(io: CliIo): ProgressDisplay {
  const stream = io.stderr as NodeJS.WriteStream;
  return stream.isTTY === true ? terminalDisplay(stream) : plainDisplay(io);
}

function terminalDisplay(stream: NodeJS.WriteStream): ProgressDisplay {
  let bar: cliProgress.SingleBar | null = null;
  let table = '';

  const stop = () => {
    bar?.stop();
    bar = null;
  };
  return {
    update(progress) {
      if (progress.table !== table) {
        stop();
        table = progress.table;
        // A table with nothing to walk gets no bar; the result lists it.
        if (progress.finished) return;
        bar = new cliProgress.SingleBar(
          {
            stream,
            format: `${progress.action} {table} [{bar}] {percentage}% | {value}/{total} rows | {rate} rows/s | {eta_formatted} left`,
            hideCursor: true,
            etaBuffer: 20,
          },
          cliProgress.Presets.shades_classic,
        );
        bar.start(progress.rowsTotal, progress.rowsWalked, { table: progress.table, rate: '-' });
      }
      bar?.setTotal(progress.rowsTotal);
      bar?.update(progress.rowsWalked, { rate: formatRate(progress.rowsPerSecond) });
      if (progress.finished) stop();
    },
    stop,
  };
}

function plainDisplay(io: CliIo): ProgressDisplay {
  let lastLine = 0;
  return {
    update(progress) {
      const now = Date.now();
      if (!progress.finished && now - lastLine < plainLineSeconds * 1000) return;
      lastLine = now;
      const state = progress.finished ? 'done' : 'walking';
      io.stderr.write(
        `insights-privacy: ${progress.action} ${progress.table}: ${state}, ${progress.rowsWalked} of ${progress.rowsTotal} rows walked, ${formatRate(progress.rowsPerSecond)} rows/s\n`,
      );
    },
    stop() {},
  };
}
