import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

export const repositoryRoot = fileURLToPath(new URL('../..', import.meta.url));
export const examplesDir = join(repositoryRoot, 'docs', 'examples');
export const packageVersion = (JSON.parse(readFileSync(join(repositoryRoot, 'package.json'), 'utf8')) as { version: string }).version;

/** Output and exit code of one process. */
export interface ProcessRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Parses a YAML file of the repository, at `path` relative to its root. */
export async function readYaml<T>(path: string): Promise<T> {
  return parse(await readFile(join(repositoryRoot, path), 'utf8')) as T;
}

/**
 * Runs a program with exactly the environment given (no variable of the test
 * run leaks in) and standard input closed, as cron, a CI runner or a
 * container runtime start it.
 */
export function runProcess(command: string, args: readonly string[], options: { env: NodeJS.ProcessEnv; cwd?: string; uid?: number; gid?: number }): Promise<ProcessRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env, cwd: options.cwd, uid: options.uid, gid: options.gid, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** A folder of stand-in programs to put first on PATH, and the log of the calls to `logger`. */
export interface ShimDir {
  readonly path: string;
  /** Reads the argument lists `logger` was called with, one per call. */
  loggerCalls(): Promise<string[][]>;
}

function shellQuote(value: string): string {
  return `'${value.replaceAll("'", `'\\''`)}'`;
}

/**
 * Creates `insights-privacy`, which runs this checkout's bin/insights-privacy.js
 * with the node running the tests, as an installed copy would, and `logger`,
 * which records its arguments (NUL-separated, one call per line) instead of
 * writing to syslog.
 */
export async function createShimDir(): Promise<ShimDir> {
  const path = await mkdtemp(join(tmpdir(), 'insights-privacy-shims-'));
  const loggerLog = join(path, 'logger-calls');
  const cli = join(repositoryRoot, 'bin', 'insights-privacy.js');

  await writeFile(join(path, 'insights-privacy'), `#!/bin/sh\nexec ${shellQuote(process.execPath)} ${shellQuote(cli)} "$@"\n`);
  await writeFile(join(path, 'logger'), `#!/bin/sh\nprintf '%s\\0' "$@" >> ${shellQuote(loggerLog)}\nprintf '\\n' >> ${shellQuote(loggerLog)}\n`);
  await chmod(join(path, 'insights-privacy'), 0o755);
  await chmod(join(path, 'logger'), 0o755);

  return {
    path,
    async loggerCalls() {
      const text = await readFile(loggerLog, 'utf8').catch((error: NodeJS.ErrnoException) => {
        if (error.code === 'ENOENT') return '';
        throw error;
      });
      return text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => line.split('\0').slice(0, -1));
    },
  };
}

/**
 * Copies the files git would commit from a working tree (tracked files and
 * untracked ones that .gitignore does not exclude) into a new folder, as a
 * fresh checkout of this state would have them.
 */
export async function copyCommittableFiles(source: string, destination: string): Promise<void> {
  const listing = await runProcess('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], { cwd: source, env: { PATH: process.env.PATH } });
  if (listing.code !== 0) throw new Error(`git ls-files failed: ${listing.stderr}`);

  for (const path of listing.stdout.split('\0').filter(Boolean)) {
    const from = join(source, path);
    // A file deleted in the working tree but still in the index is listed too.
    if (!existsSync(from)) continue;
    await mkdir(dirname(join(destination, path)), { recursive: true });
    await copyFile(from, join(destination, path));
  }
}

/**
 * Turns a test database URL into the form Coder's install guide stores in the
 * coder-db-url Secret: scheme postgres:// and sslmode=disable.
 */
export function coderConnectionUrl(url: string): string {
  const parsed = new URL(url);
  parsed.protocol = 'postgres:';
  parsed.searchParams.set('sslmode', 'disable');
  return parsed.toString();
}

/** One crontab: its environment lines and its job lines. */
export interface Crontab {
  readonly environment: Record<string, string>;
  readonly jobs: { schedule: string; command: string }[];
}

/**
 * Parses a crontab as cron(8) reads it: comments and blank lines are skipped,
 * `NAME=value` lines set the environment, and other lines are five time
 * fields and a command.
 */
export function parseCrontab(text: string): Crontab {
  const environment: Record<string, string> = {};
  const jobs: { schedule: string; command: string }[] = [];
  for (const line of text.split('\n')) {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) continue;

    const assignment = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(trimmed);
    if (assignment) {
      environment[assignment[1]] = assignment[2];
      continue;
    }
    const job = /^(\S+\s+\S+\s+\S+\s+\S+\s+\S+)\s+(.+)$/.exec(trimmed);
    if (!job) throw new Error(`Crontab line is neither a comment, an assignment nor a job: ${line}`);
    jobs.push({ schedule: job[1], command: job[2] });
  }
  return { environment, jobs };
}

/**
 * Applies cron's rule for % in a command: `\%` is a literal %, and an
 * unescaped % would end the command and start its standard input, which the
 * examples never use, so it is rejected.
 */
export function cronCommandLine(command: string): string {
  let result = '';
  for (let index = 0; index < command.length; index += 1) {
    if (command[index] === '\\' && command[index + 1] === '%') {
      result += '%';
      index += 1;
    } else if (command[index] === '%') {
      throw new Error(`Unescaped % in crontab command at position ${index}: cron would end the command there`);
    } else {
      result += command[index];
    }
  }
  return result;
}
