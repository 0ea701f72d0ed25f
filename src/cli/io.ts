import { createInterface } from 'node:readline/promises';
import { Chalk, type ChalkInstance } from 'chalk';

/** The process streams and environment a command uses, replaceable in tests. */
export interface CliIo {
  readonly stdout: { write(text: string): unknown };
  readonly stderr: { write(text: string): unknown };
  readonly stdin: NodeJS.ReadableStream & { isTTY?: boolean };
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  /** Whether stdout is a terminal, which enables colour. */
  readonly colour: boolean;
}

/** The real process streams. */
export function processIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    stdin: process.stdin,
    env: process.env,
    cwd: process.cwd(),
    colour: Boolean(process.stdout.isTTY),
  };
}

/** A chalk instance that honours NO_COLOR and FORCE_COLOR, and is plain when stdout is no terminal. */
export function paint(io: CliIo): ChalkInstance {
  const noColour = io.env.NO_COLOR !== undefined && io.env.NO_COLOR !== '';
  const forced = io.env.FORCE_COLOR !== undefined && io.env.FORCE_COLOR !== '0';
  if (noColour) return new Chalk({ level: 0 });
  return new Chalk({ level: forced || io.colour ? 1 : 0 });
}

/** Asks a yes/no question on stdin; only "y" or "yes" confirms, and end of input or Ctrl+C declines. */
export async function askYesNo(io: CliIo, question: string): Promise<boolean> {
  const readline = createInterface({ input: io.stdin, output: io.stderr as NodeJS.WritableStream });
  try {
    return await new Promise<boolean>((resolve) => {
      readline.question(`${question} [y/N] `).then(
        (answer) => resolve(/^(y|yes)$/i.test(answer.trim())),
        () => resolve(false),
      );
      // The question never settles when input ends first; the answer to a
      // line that came just before the end settles before this runs.
      readline.once('close', () => setImmediate(() => resolve(false)));
    });
  } finally {
    readline.close();
  }
}
