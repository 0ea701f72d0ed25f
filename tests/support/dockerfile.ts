import { cp, mkdir, mkdtemp, readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, posix, relative, resolve, sep } from 'node:path';
import type dockerignore from '@balena/dockerignore';
import { DockerfileParser, type Copy, type Dockerfile, type Entrypoint, type Env, type From } from 'dockerfile-ast';
import { runProcess, type ProcessRun } from './examples.js';

// @balena/dockerignore is CommonJS, and its module.exports is the factory. Its
// types declare a default export, so TypeScript's NodeNext resolution puts
// the factory under `.default`. require() returns the factory itself.
const ignore = createRequire(import.meta.url)('@balena/dockerignore') as typeof dockerignore.default;

/** Parses a Dockerfile. */
export async function readDockerfile(path: string): Promise<Dockerfile> {
  return DockerfileParser.parse(await readFile(path, 'utf8'));
}

/** One stage of a multi-stage build, with the folder that stands for its file system. */
export interface BuiltStage {
  readonly name: string | null;
  /** The stage's WORKDIR, for example /app. */
  readonly workdir: string;
  /** Folder on this machine that contains what the stage put in its WORKDIR. */
  readonly dir: string;
  readonly env: Record<string, string>;
  readonly user: string | null;
  readonly entrypoint: string[] | null;
}

/** A RUN step and its outcome. */
export interface RunStep {
  readonly stage: string | null;
  readonly command: string;
  readonly result: ProcessRun;
}

/**
 * Replays the build steps of a Dockerfile on this machine, without a
 * container engine. Each stage gets a temporary folder that stands for its
 * WORKDIR. COPY takes files from the build context, minus what .dockerignore
 * excludes, or with --from from an earlier stage's folder. RUN runs its shell
 * command with `sh -c` in the stage's folder, with the stage's ENV on top of
 * this process's environment (for PATH, HOME and npm's cache).
 *
 * NOTE: the base image's own files are not there, so a step may only use
 * what this machine and the copied files provide, and every path a step
 * names must lie below WORKDIR. Instructions other than FROM, WORKDIR, COPY,
 * RUN, ENV, USER and ENTRYPOINT are rejected rather than skipped.
 */
export async function replayBuild(dockerfile: Dockerfile, context: string): Promise<{ stages: BuiltStage[]; runs: RunStep[] }> {
  const ignored = await dockerignoreFilter(context);
  const root = await mkdtemp(join(tmpdir(), 'insights-privacy-image-'));
  const stages: { name: string | null; workdir: string | null; dir: string; env: Record<string, string>; user: string | null; entrypoint: string[] | null }[] = [];
  const runs: RunStep[] = [];

  for (const instruction of dockerfile.getInstructions()) {
    const keyword = instruction.getKeyword();
    if (keyword === 'FROM') {
      const dir = join(root, `stage-${stages.length}`);
      await mkdir(dir);
      stages.push({ name: (instruction as From).getBuildStage(), workdir: null, dir, env: {}, user: null, entrypoint: null });
      continue;
    }

    const stage = stages.at(-1);
    if (!stage) throw new Error(`${keyword} before the first FROM`);
    const workdir = () => {
      if (!stage.workdir) throw new Error(`${keyword} before WORKDIR: the replay maps only WORKDIR to a folder`);
      return stage.workdir;
    };

    switch (keyword) {
      case 'WORKDIR':
        stage.workdir = instruction.getArgumentsContent() ?? '';
        break;
      case 'ENV':
        for (const property of (instruction as Env).getProperties()) stage.env[property.getName()] = property.getValue() ?? '';
        break;
      case 'USER':
        stage.user = instruction.getArgumentsContent();
        break;
      case 'ENTRYPOINT':
        stage.entrypoint = (instruction as Entrypoint).getJSONStrings().map((value) => value.getJSONValue());
        break;
      case 'COPY': {
        const copy = instruction as Copy;
        const from = copy.getFromFlag()?.getValue() ?? null;
        const source = from === null ? null : stages.find((candidate) => candidate.name === from);
        if (from !== null && !source) throw new Error(`COPY --from=${from} names no earlier stage`);
        const args = copy.getArguments().map((argument) => argument.getValue());
        const destination = inStage(stage.dir, workdir(), args[args.length - 1]);
        for (const path of args.slice(0, -1)) {
          if (source) {
            await copyInto(inStage(source.dir, source.workdir ?? '/', path), destination, () => true);
          } else {
            await copyInto(join(context, path), destination, (file) => !ignored(relative(context, file)));
          }
        }
        break;
      }
      case 'RUN': {
        const command = instruction.getArgumentsContent() ?? '';
        workdir();
        const result = await runProcess('sh', ['-c', command], { cwd: stage.dir, env: { ...process.env, ...stage.env } });
        runs.push({ stage: stage.name, command, result });
        if (result.code !== 0) throw new Error(`RUN ${command} exited with ${result.code}:\n${result.stdout}\n${result.stderr}`);
        break;
      }
      default:
        throw new Error(`The build replay does not handle ${keyword}`);
    }
  }

  return { stages: stages.map((stage) => ({ ...stage, workdir: stage.workdir ?? '/' })), runs };
}

/** Maps a path of the image (absolute, or relative to WORKDIR) to the stage's folder. */
function inStage(dir: string, workdir: string, path: string): string {
  const absolute = posix.resolve(workdir, path);
  const below = posix.relative(workdir, absolute);
  if (below.startsWith('..') || posix.isAbsolute(below)) throw new Error(`Path ${path} is outside WORKDIR ${workdir}, which the replay cannot map`);
  return join(dir, ...below.split('/').filter(Boolean));
}

/**
 * Copies as Docker's COPY does for one source: the contents of a folder go
 * into the destination folder, and a file goes into it under its own name
 * when the destination ends with a slash or is an existing folder.
 */
async function copyInto(source: string, destination: string, keep: (path: string) => boolean): Promise<void> {
  const sourceStat = await stat(source);
  if (sourceStat.isDirectory()) {
    await cp(source, destination, { recursive: true, verbatimSymlinks: true, filter: keep });
    return;
  }
  if (!keep(source)) return;
  const destinationIsDir = destination.endsWith(sep) || (await stat(destination).catch(() => null))?.isDirectory() === true;
  const target = destinationIsDir ? join(destination, source.split(sep).at(-1) as string) : destination;
  await mkdir(dirname(target), { recursive: true });
  await cp(source, target);
}

/** Returns a test of whether .dockerignore in the context excludes a path relative to it. */
export async function dockerignoreFilter(context: string): Promise<(path: string) => boolean> {
  const text = await readFile(join(context, '.dockerignore'), 'utf8');
  const matcher = ignore().add(text.split('\n'));
  return (path: string) => {
    if (path === '' || isAbsolute(path) || path.startsWith('..')) return false;
    return matcher.ignores(path.split(sep).join('/'));
  };
}

/**
 * Replaces every WORKDIR-rooted path in an ENTRYPOINT with the stage's
 * folder, so that the entrypoint runs on this machine.
 */
export function localEntrypoint(stage: BuiltStage): string[] {
  if (!stage.entrypoint) throw new Error('The stage has no ENTRYPOINT');
  const prefix = stage.workdir.endsWith('/') ? stage.workdir : `${stage.workdir}/`;
  return stage.entrypoint.map((part) => (part.startsWith(prefix) ? resolve(stage.dir, part.slice(prefix.length)) : part));
}
