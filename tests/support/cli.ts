import { createServer } from 'node:net';
import { PassThrough } from 'node:stream';
import { runCli } from '../../src/cli/main.js';

/** Output and exit code of one in-process run of the command line. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** How to run the command line in-process. */
export interface CliRunOptions {
  /** The environment the command sees; default empty, so no DATABASE_URL of the test run leaks in. */
  env?: NodeJS.ProcessEnv;
  /** Working directory for config discovery and relative paths. */
  cwd: string;
  /** Text typed on a terminal. Without it, stdin is not a terminal. */
  typed?: string;
  colour?: boolean;
}

/** Runs the command line in-process through `runCli` with captured output. */
export async function runCliCaptured(argv: string[], options: CliRunOptions): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const stdin = Object.assign(new PassThrough(), { isTTY: options.typed !== undefined });
  if (options.typed !== undefined) stdin.end(options.typed);
  const code = await runCli(argv, {
    stdout: { write: (text: string) => (stdout += text) },
    stderr: { write: (text: string) => (stderr += text) },
    stdin,
    env: options.env ?? {},
    cwd: options.cwd,
    colour: options.colour ?? false,
  });
  return { code, stdout, stderr };
}

/** Finds a loopback port with nothing listening on it, by binding a socket and closing it again. */
export async function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
