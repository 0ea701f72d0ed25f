// Help output: every command has examples whose options exist, the exit
// codes listed match the ones the tool uses, and the version flags print
// package.json's version.
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ExitCode } from '../src/core/errors.js';
import { runCliCaptured, type CliRun } from './support/cli.js';

const repositoryRoot = fileURLToPath(new URL('..', import.meta.url));
const packageVersion = (JSON.parse(readFileSync(join(repositoryRoot, 'package.json'), 'utf8')) as { version: string }).version;

const runTool = (argv: string[]): Promise<CliRun> => runCliCaptured(argv, { cwd: tmpdir() });

/** Returns the commands the top-level help lists, without commander's `help`. */
async function listedCommands(): Promise<string[]> {
  const help = (await runTool(['--help'])).stdout;
  const section = help.split('\nCommands:\n')[1].split('\n\n')[0];
  return [...section.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((match) => match[1]).filter((name) => name !== 'help');
}

/** Returns the lines of the Examples section, each without its trailing `# comment` and shell redirection. */
function exampleLines(help: string): string[] {
  const section = help.split('\nExamples:\n')[1] ?? '';
  return section
    .split('\n\n')[0]
    .split('\n')
    .map((line) => line.replace(/\s+#.*$/, '').replace(/\s+>.*$/, '').trim())
    .filter((line) => line !== '');
}

/** Returns the option names (long and short) in the Options section of a command's help. */
function optionNames(help: string): Set<string> {
  const section = help.split('\nOptions:\n')[1].split('\n\n')[0];
  return new Set([...section.matchAll(/(?:^|[\s,])(--?[a-z][a-z-]*)/gm)].map((match) => match[1]));
}

test('every command is listed', async () => {
  const commands = await listedCommands();

  // A new command joins the checks below through the list above; these are
  // the ones that must never disappear.
  expect(commands).toEqual(expect.arrayContaining(['apply', 'backfill', 'status', 'rotate-key', 'forget-keys', 'export-key', 'import-key', 'demo']));
});

test('each command has examples', async () => {
  for (const command of await listedCommands()) {
    const run = await runTool([command, '--help']);
    const examples = exampleLines(run.stdout);
    const options = optionNames(run.stdout);

    expect({ command, code: run.code }).toEqual({ command, code: ExitCode.ok });
    expect({ command, examples: examples.length > 0 }).toEqual({ command, examples: true });
    for (const example of examples) {
      expect({ example, prefix: example.startsWith(`insights-privacy ${command}`) }).toEqual({ example, prefix: true });
      const unknown = [...example.matchAll(/\s(--?[a-z][a-z-]*)/g)].map((match) => match[1]).filter((flag) => !options.has(flag));
      expect({ example, unknown }).toEqual({ example, unknown: [] });
    }
  }
});

test('exit codes in the help', async () => {
  const help = (await runTool(['--help'])).stdout;
  const section = help.split('\nExit codes:\n')[1];
  const listed = [...section.matchAll(/^ {2}(\d) {2}(\S+)/gm)].map((match) => [Number(match[1]), match[2]]);

  expect(listed).toEqual([
    [ExitCode.ok, 'success;'],
    [ExitCode.checkFailed, 'status'],
    [ExitCode.error, 'error:'],
    [ExitCode.aborted, 'aborted:'],
  ]);
});

test('exit codes in the README', async () => {
  const readme = await readFile(join(repositoryRoot, 'README.md'), 'utf8');
  const table = readme.split('\n## Exit codes\n')[1].split('\n## ')[0];
  const codes = [...table.matchAll(/^\| (\d) \|/gm)].map((match) => Number(match[1]));

  expect(codes).toEqual(Object.values(ExitCode).sort());
});

test.each([['--version'], ['-V']])('%s prints the package version', async (flag) => {
  const run = await runTool([flag]);

  expect(run.code).toBe(ExitCode.ok);
  expect(run.stdout).toBe(`${packageVersion}\n`);
});
