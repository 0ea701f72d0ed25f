// The deployment examples in docs/examples/, the Dockerfile and
// docker-compose.yml: their structure, and every insights-privacy command in
// them run as written against a Coder-shaped database.
import { access, chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { CronExpressionParser } from 'cron-parser';
import { ExitCode } from '../src/core/errors.js';
import { triggerName } from '../src/core/enforcement.js';
import { createCoderSchema, seedPopulation } from '../src/fixture/index.js';
import { closedPort } from './support/cli.js';
import { createCoderDatabase, usageTables, type CoderDatabase } from './support/coder.js';
import { createTestDatabase } from './support/database.js';
import { localEntrypoint, readDockerfile, replayBuild, dockerignoreFilter, type BuiltStage } from './support/dockerfile.js';
import {
  coderConnectionUrl,
  copyCommittableFiles,
  createShimDir,
  cronCommandLine,
  examplesDir,
  packageVersion,
  parseCrontab,
  readYaml,
  repositoryRoot,
  runProcess,
  type ProcessRun,
  type ShimDir,
} from './support/examples.js';

let shims: ShimDir;
let workDir: string;

beforeAll(async () => {
  shims = await createShimDir();
  workDir = await mkdtemp(join(tmpdir(), 'insights-privacy-deploy-'));
});

afterAll(async () => {
  if (shims) await rm(shims.path, { recursive: true, force: true });
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

// Tests that run npm against the registry or its cache. They do not depend on
// the PostgreSQL version, so the PostgreSQL 13 and no-pgcrypto passes of
// `npm test` skip them.
const slowTest = process.env.INSIGHTS_PRIVACY_TEST_POSTGRES ? test.skip : test;
const slowDescribe = process.env.INSIGHTS_PRIVACY_TEST_POSTGRES ? describe.skip : describe;

/** Returns the environment without npm's npm_* variables, which `npm test` sets for its own run. */
function withoutNpmVariables(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([name]) => !name.toLowerCase().startsWith('npm_')));
}

/** The PATH of a run: the stand-ins first, so that `insights-privacy` is this checkout. */
const pathWithShims = (rest = '/usr/local/bin:/usr/bin:/bin') => `${shims.path}:${rest}`;

async function countTriggers(coder: CoderDatabase): Promise<number> {
  const { rows } = await coder.client.query<{ count: string }>('SELECT count(*) AS count FROM pg_catalog.pg_trigger WHERE tgname = $1', [triggerName]);
  return Number(rows[0].count);
}

async function dropTrigger(coder: CoderDatabase, table: string): Promise<void> {
  await coder.client.query(`DROP TRIGGER ${triggerName} ON public.${table}`);
}

// ---------------------------------------------------------------------------
// GitHub Actions

interface WorkflowStep {
  name?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
  env?: Record<string, string>;
  shell?: string;
  'working-directory'?: string;
  'continue-on-error'?: unknown;
}

interface Workflow {
  on: Record<string, unknown>;
  jobs: Record<string, { needs?: string | string[]; env?: Record<string, string>; steps: WorkflowStep[] }>;
}

/** Resolves `${{ secrets.NAME }}` expressions. Any other expression is an error, because the test cannot evaluate it. */
function resolveExpressions(env: Record<string, string>, secrets: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(env).map(([name, value]) => {
      const secret = /^\$\{\{\s*secrets\.([A-Za-z0-9_]+)\s*\}\}$/.exec(value);
      if (secret) {
        const resolved = secrets[secret[1]];
        if (resolved === undefined) throw new Error(`The test provides no secret ${secret[1]}`);
        return [name, resolved];
      }
      if (value.includes('${{')) throw new Error(`Unsupported expression in env ${name}: ${value}`);
      return [name, value];
    }),
  );
}

describe('GitHub Actions workflow', () => {
  let workflow: Workflow;

  beforeAll(async () => {
    workflow = await readYaml<Workflow>('docs/examples/github-actions.yml');
  });

  const job = () => workflow.jobs['insights-privacy'];
  /** Finds a step of the insights-privacy job by its name, or by the action it uses when it has none. */
  const step = (name: string) => {
    const found = job().steps.find((candidate) => (candidate.name ?? candidate.uses) === name);
    if (!found) throw new Error(`No step named ${name}`);
    return found;
  };

  test('runs after the Coder upgrade', () => {
    const upgrade = workflow.jobs['upgrade-coder'].steps.find((candidate) => candidate.name === 'Upgrade Coder');

    expect(job().needs).toBe('upgrade-coder');
    expect(upgrade?.run).toMatch(/helm upgrade --install coder coder-v2\/coder[^\n]*\\\n[^\n]*--wait --timeout 15m/);
  });

  test('database URL from a secret', () => {
    expect(job().env).toEqual({ INSIGHTS_PRIVACY_DATABASE_URL: '${{ secrets.CODER_PG_CONNECTION_URL }}' });
  });

  test('install, apply, check in order', () => {
    const steps = job().steps;

    expect(steps.map((candidate) => candidate.name ?? candidate.uses)).toEqual([
      'actions/setup-node@v4',
      'actions/checkout@v4',
      'Install insights-privacy',
      'Enforce anonymize',
      'Check enforcement',
    ]);
    expect(step('actions/setup-node@v4').with).toEqual({ 'node-version': 20 });
    expect(step('actions/checkout@v4').with).toEqual({ repository: 'your-org/insights-privacy', ref: `v${packageVersion}`, path: 'insights-privacy' });
    expect(step('Install insights-privacy')['working-directory']).toBe('insights-privacy');
    expect(step('Install insights-privacy').run).toBe(`npm ci\nnpm pack\nnpm install --global ./insights-privacy-${packageVersion}.tgz\n`);
    expect(step('Enforce anonymize').run).toBe('insights-privacy apply --mode anonymize --yes');
    expect(step('Check enforcement').run).toBe('insights-privacy status --check --no-counts');
    for (const candidate of steps) {
      expect(candidate['continue-on-error']).toBeUndefined();
      expect(candidate.shell).toBeUndefined();
    }
  });

  describe('steps run as written', () => {
    let coder: CoderDatabase;

    beforeAll(async () => {
      coder = await createCoderDatabase('deploy_actions', '2026');
    });

    afterAll(async () => {
      await coder?.close();
    });

    /**
     * Runs a step's script as a Linux runner does: `bash --noprofile --norc
     * -eo pipefail` on a script file, in the step's working-directory below
     * the workspace. PATH defaults to the stand-ins.
     */
    async function runStep(name: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<ProcessRun> {
      const script = join(workDir, 'step.sh');
      await writeFile(script, step(name).run ?? '');
      const env = resolveExpressions({ ...job().env, ...step(name).env }, { CODER_PG_CONNECTION_URL: coderConnectionUrl(coder.database.url) });
      return runProcess('bash', ['--noprofile', '--norc', '-eo', 'pipefail', script], {
        cwd: join(workDir, step(name)['working-directory'] ?? ''),
        env: { PATH: pathWithShims(), ...env, ...extraEnv },
      });
    }

    test('apply then check pass', async () => {
      const apply = await runStep('Enforce anonymize');
      const check = await runStep('Check enforcement');

      expect(apply.code).toBe(ExitCode.ok);
      expect(apply.stdout).toContain('Applied mode anonymize (scope source)');
      expect(check.code).toBe(ExitCode.ok);
      expect(await countTriggers(coder)).toBe(usageTables('2026').length);
    });

    test('check fails without a trigger', async () => {
      await dropTrigger(coder, 'workspace_agent_stats');

      const check = await runStep('Check enforcement');

      expect(check.code).toBe(ExitCode.checkFailed);
      expect(check.stdout).toContain('workspace_agent_stats');
    });

    test('next run repairs it', async () => {
      const apply = await runStep('Enforce anonymize');
      const check = await runStep('Check enforcement');

      expect(apply.code).toBe(ExitCode.ok);
      expect(check.code).toBe(ExitCode.ok);
      expect(await countTriggers(coder)).toBe(usageTables('2026').length);
    });

    // The install step runs npm ci, npm pack and a global install, so it
    // runs in the default pass only. A copy of the files git would commit
    // stands in for actions/checkout. The global prefix is a temporary
    // folder, because setup-node gives the runner a writable one too.
    slowTest('install step as written', async () => {
      const checkout = join(workDir, String(step('actions/checkout@v4').with?.path));
      await copyCommittableFiles(repositoryRoot, checkout);
      const prefix = await mkdtemp(join(tmpdir(), 'insights-privacy-global-'));
      const npmPath = `${dirname(process.execPath)}:/usr/local/bin:/usr/bin:/bin`;
      // npm reads its global config file from below the prefix, so moving
      // the prefix would drop this machine's settings (a CA file, a proxy);
      // the machine's file is named explicitly instead.
      const machineEnv = withoutNpmVariables(process.env);
      const globalConfig = (await runProcess('npm', ['config', 'get', 'globalconfig'], { env: machineEnv })).stdout.trim();

      try {
        const install = await runStep('Install insights-privacy', { ...machineEnv, PATH: npmPath, npm_config_prefix: prefix, npm_config_globalconfig: globalConfig });
        const installedPath = { PATH: `${join(prefix, 'bin')}:${npmPath}` };
        const version = await runProcess('insights-privacy', ['--version'], { cwd: workDir, env: installedPath });
        await dropTrigger(coder, 'workspace_app_stats');
        const failedCheck = await runStep('Check enforcement', installedPath);
        const apply = await runStep('Enforce anonymize', installedPath);
        const check = await runStep('Check enforcement', installedPath);

        expect(install.code).toBe(0);
        expect(version.stdout).toBe(`${packageVersion}\n`);
        expect(failedCheck.code).toBe(ExitCode.checkFailed);
        expect(apply.code).toBe(ExitCode.ok);
        expect(check.code).toBe(ExitCode.ok);
      } finally {
        await rm(prefix, { recursive: true, force: true });
        await rm(checkout, { recursive: true, force: true });
      }
    }, 600_000);
  });
});

// ---------------------------------------------------------------------------
// Kubernetes Job

interface SecretEnv {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}

interface JobContainer {
  name: string;
  image: string;
  command?: string[];
  args: string[];
  env: SecretEnv[];
  resources: { requests: Record<string, string>; limits: Record<string, string> };
  securityContext: { allowPrivilegeEscalation: boolean; readOnlyRootFilesystem: boolean; capabilities: { drop: string[] } };
}

interface KubernetesJob {
  apiVersion: string;
  kind: string;
  metadata: { name: string; annotations: Record<string, string> };
  spec: {
    backoffLimit: number;
    activeDeadlineSeconds: number;
    template: {
      spec: {
        restartPolicy: string;
        securityContext: { runAsNonRoot: boolean; runAsUser: number; runAsGroup: number; seccompProfile: { type: string } };
        initContainers: JobContainer[];
        containers: JobContainer[];
      };
    };
  };
}

/** The Secret Coder's install guide creates, holding the connection URL under the key url. */
const coderSecretRef = { name: 'coder-db-url', key: 'url' };

describe('Kubernetes Job', () => {
  let job: KubernetesJob;
  const containers = () => [...job.spec.template.spec.initContainers, ...job.spec.template.spec.containers];

  beforeAll(async () => {
    job = await readYaml<KubernetesJob>('docs/examples/kubernetes-job.yaml');
  });

  test('Helm hook annotations', () => {
    expect(job.apiVersion).toBe('batch/v1');
    expect(job.kind).toBe('Job');
    expect(job.metadata.annotations['helm.sh/hook']).toBe('post-install,post-upgrade');
    expect(job.metadata.annotations['helm.sh/hook-delete-policy']).toBe('before-hook-creation,hook-succeeded');
  });

  test('retries within a deadline', () => {
    expect(job.spec.backoffLimit).toBe(6);
    expect(job.spec.activeDeadlineSeconds).toBe(900);
    expect(job.spec.template.spec.restartPolicy).toBe('Never');
  });

  test('runs as the image user, not root', async () => {
    const dockerfile = await readDockerfile(join(repositoryRoot, 'Dockerfile'));
    const imageUser = dockerfile.getInstructions().filter((instruction) => instruction.getKeyword() === 'USER').at(-1)?.getArgumentsContent();
    const pod = job.spec.template.spec.securityContext;

    expect(pod.runAsNonRoot).toBe(true);
    expect(`${pod.runAsUser}:${pod.runAsGroup}`).toBe(imageUser);
    expect(pod.seccompProfile.type).toBe('RuntimeDefault');
    for (const container of containers()) {
      expect(container.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
    }
  });

  test('resource requests and limits', () => {
    for (const container of containers()) {
      expect(container.resources).toEqual({ requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '256Mi' } });
    }
  });

  test('image of this version', () => {
    for (const container of containers()) {
      expect(container.image).toBe(`registry.example.com/insights-privacy:${packageVersion}`);
      expect(container.command).toBeUndefined();
    }
  });

  test('database URL from the Secret', () => {
    for (const container of containers()) {
      expect(container.env).toEqual([{ name: 'INSIGHTS_PRIVACY_DATABASE_URL', valueFrom: { secretKeyRef: coderSecretRef } }]);
    }
  });

  test('apply before the check', () => {
    expect(job.spec.template.spec.initContainers.map((container) => container.args)).toEqual([['apply', '--mode', 'anonymize', '--yes']]);
    expect(job.spec.template.spec.containers.map((container) => container.args)).toEqual([['status', '--check', '--no-counts']]);
  });

  test('same Job in Coder values', async () => {
    const values = await readYaml<{ coder: { env: SecretEnv[] }; extraTemplates: unknown[] }>('docs/examples/coder-values.yaml');

    expect(values.extraTemplates).toEqual([job]);
    expect(values.coder.env).toEqual([{ name: 'CODER_PG_CONNECTION_URL', valueFrom: { secretKeyRef: coderSecretRef } }]);
  });

  describe('pod runs as written', () => {
    /**
     * Runs the pod's containers as the kubelet does with restartPolicy Never:
     * each init container in turn, stopping at the first failure, then the
     * containers. The image's entrypoint is the insights-privacy command, so
     * each container runs `insights-privacy` with its args; env values come
     * from the Secret given.
     */
    async function runPod(secretValue: string): Promise<{ name: string; run: ProcessRun }[]> {
      const runs: { name: string; run: ProcessRun }[] = [];
      for (const container of containers()) {
        const env: NodeJS.ProcessEnv = { PATH: pathWithShims() };
        for (const variable of container.env) {
          if (variable.valueFrom?.secretKeyRef?.name !== coderSecretRef.name) throw new Error(`Env ${variable.name} is not from the Secret`);
          env[variable.name] = secretValue;
        }
        const run = await runProcess('insights-privacy', container.args, { cwd: workDir, env });
        runs.push({ name: container.name, run });
        if (run.code !== 0) break;
      }
      return runs;
    }

    test('fails before Coder creates its tables', async () => {
      const database = await createTestDatabase('deploy_job_empty');
      try {
        const before = await runPod(coderConnectionUrl(database.url));

        const client = await database.connect();
        try {
          await createCoderSchema(client, '2026');
          await seedPopulation(client, { users: 2, templates: 1, workspacesPerUser: 1 });
        } finally {
          await client.end();
        }
        const retry = await runPod(coderConnectionUrl(database.url));

        expect(before.map((container) => [container.name, container.run.code])).toEqual([['apply', ExitCode.error]]);
        expect(before[0].run.stderr).toContain('is not a Coder database');
        expect(retry.map((container) => [container.name, container.run.code])).toEqual([
          ['apply', ExitCode.ok],
          ['check', ExitCode.ok],
        ]);
      } finally {
        await database.drop();
      }
    });

    describe('on a Coder database', () => {
      let coder: CoderDatabase;

      beforeAll(async () => {
        coder = await createCoderDatabase('deploy_job', '2025');
      });

      afterAll(async () => {
        await coder?.close();
      });

      test('apply and check pass', async () => {
        const runs = await runPod(coderConnectionUrl(coder.database.url));

        expect(runs.map((container) => [container.name, container.run.code])).toEqual([
          ['apply', ExitCode.ok],
          ['check', ExitCode.ok],
        ]);
        expect(await countTriggers(coder)).toBe(usageTables('2025').length);
      });

      test('check fails without a trigger', async () => {
        await dropTrigger(coder, 'workspace_app_stats');
        const check = job.spec.template.spec.containers[0];

        const run = await runProcess('insights-privacy', check.args, { cwd: workDir, env: { PATH: pathWithShims(), INSIGHTS_PRIVACY_DATABASE_URL: coderConnectionUrl(coder.database.url) } });

        expect(run.code).toBe(ExitCode.checkFailed);
        expect(run.stdout).toContain('workspace_app_stats');
      });

      test('next run repairs it', async () => {
        const runs = await runPod(coderConnectionUrl(coder.database.url));

        expect(runs.map((container) => [container.name, container.run.code])).toEqual([
          ['apply', ExitCode.ok],
          ['check', ExitCode.ok],
        ]);
        expect(await countTriggers(coder)).toBe(usageTables('2025').length);
      });
    });
  });
});

// ---------------------------------------------------------------------------
// crontab

describe('crontab', () => {
  let text: string;

  beforeAll(async () => {
    text = await readFile(join(examplesDir, 'crontab'), 'utf8');
  });

  test('one job every 30 minutes', () => {
    const crontab = parseCrontab(text);

    expect(crontab.jobs).toHaveLength(1);
    expect(crontab.jobs[0].schedule).toBe('*/30 * * * *');
    expect(CronExpressionParser.parse(crontab.jobs[0].schedule, { currentDate: new Date('2026-01-01T00:10:00Z'), tz: 'UTC' }).next().toISOString()).toBe('2026-01-01T00:30:00.000Z');
    expect(text.endsWith('\n')).toBe(true);
  });

  test('environment lines', () => {
    const crontab = parseCrontab(text);

    expect(crontab.environment).toEqual({
      SHELL: '/bin/sh',
      PATH: '/usr/local/bin:/usr/bin:/bin',
      MAILTO: 'dba@example.com',
      INSIGHTS_PRIVACY_CONFIG: '/etc/insights-privacy/coder.json',
    });
    expect(cronCommandLine(crontab.jobs[0].command)).toContain('insights-privacy status --check --no-counts');
  });

  describe('job runs as written', () => {
    let coder: CoderDatabase;
    let configFile: string;

    beforeAll(async () => {
      coder = await createCoderDatabase('deploy_cron', '2026');
      configFile = join(workDir, 'coder.json');
      await writeFile(configFile, `${JSON.stringify({ databaseUrl: coderConnectionUrl(coder.database.url) })}\n`);
      await chmod(configFile, 0o600);
      const enforced = await runProcess('insights-privacy', ['apply', '--mode', 'anonymize', '--yes'], { cwd: workDir, env: { PATH: pathWithShims(), INSIGHTS_PRIVACY_CONFIG: configFile } });
      if (enforced.code !== 0) throw new Error(`apply failed: ${enforced.stderr}`);
    });

    afterAll(async () => {
      await coder?.close();
    });

    /**
     * Runs the job's command as cron does: `$SHELL -c command` after cron's
     * % handling, with the crontab's environment lines. PATH gets the
     * stand-ins in front, and INSIGHTS_PRIVACY_CONFIG points at a file with
     * the test database's URL.
     */
    async function runJob(config: string): Promise<ProcessRun> {
      const crontab = parseCrontab(text);
      const env = { ...crontab.environment, PATH: pathWithShims(crontab.environment.PATH), INSIGHTS_PRIVACY_CONFIG: config, HOME: workDir };
      return runProcess(crontab.environment.SHELL, ['-c', cronCommandLine(crontab.jobs[0].command)], { cwd: workDir, env });
    }

    test('silent while enforcement holds', async () => {
      const run = await runJob(configFile);

      expect(run.code).toBe(0);
      expect(run.stdout).toBe('');
      expect(run.stderr).toBe('');
      expect(await shims.loggerCalls()).toEqual([]);
    });

    test('reports a missing trigger', async () => {
      await dropTrigger(coder, 'template_usage_stats');

      const run = await runJob(configFile);

      expect(run.stdout).toContain('template_usage_stats');
      expect(await shims.loggerCalls()).toEqual([['-t', 'insights-privacy', '-p', 'user.err', `status --check failed with exit code ${ExitCode.checkFailed}`]]);
    });

    test('reports a connection failure', async () => {
      const unreachable = join(workDir, 'unreachable.json');
      await writeFile(unreachable, JSON.stringify({ databaseUrl: `postgres://coder@127.0.0.1:${await closedPort()}/coder?sslmode=disable` }));

      const run = await runJob(unreachable);

      expect(run.stdout).toContain('error: Could not connect to');
      expect((await shims.loggerCalls()).at(-1)).toEqual(['-t', 'insights-privacy', '-p', 'user.err', `status --check failed with exit code ${ExitCode.error}`]);
    });
  });
});

// ---------------------------------------------------------------------------
// docker-compose.yml

interface ComposeFile {
  services: Record<
    string,
    {
      image: string;
      environment: Record<string, string>;
      ports: string[];
      volumes: string[];
      healthcheck: { test: string[]; interval: string; timeout: string; retries: number };
    }
  >;
  volumes: Record<string, unknown>;
}

describe('docker-compose.yml', () => {
  let compose: ComposeFile;
  const postgres = () => compose.services.postgres;

  beforeAll(async () => {
    compose = await readYaml<ComposeFile>('docker-compose.yml');
  });

  test('PostgreSQL 17 on port 5432', () => {
    expect(Object.keys(compose.services)).toEqual(['postgres']);
    expect(postgres().image).toBe('postgres:17');
    expect(postgres().ports).toEqual(['5432:5432']);
    expect(postgres().environment).toEqual({ POSTGRES_USER: 'coder', POSTGRES_PASSWORD: 'coder', POSTGRES_DB: 'coder' });
  });

  test('healthcheck with pg_isready', () => {
    expect(postgres().healthcheck.test).toEqual(['CMD-SHELL', 'pg_isready -U coder -d coder']);
    expect(postgres().healthcheck.retries).toBeGreaterThan(0);
  });

  test('data in a named volume', () => {
    expect(postgres().volumes).toEqual(['coder-postgres:/var/lib/postgresql/data']);
    expect(Object.keys(compose.volumes)).toEqual(['coder-postgres']);
  });

  test('documented URLs match', async () => {
    const sources = [await readFile(join(repositoryRoot, 'docker-compose.yml'), 'utf8'), await readFile(join(repositoryRoot, 'docs', 'deployment.md'), 'utf8')];
    const urls = sources.flatMap((source) => [...source.matchAll(/postgres(?:ql)?:\/\/[^\s'"`]*localhost[^\s'"`]*/g)].map((match) => match[0]));
    const { environment, ports } = postgres();
    const hostPort = ports[0].split(':')[0];

    expect(urls.length).toBeGreaterThanOrEqual(4);
    for (const url of urls) {
      const parsed = new URL(url);
      expect({ url, user: parsed.username, password: parsed.password, port: parsed.port, database: parsed.pathname, sslmode: parsed.searchParams.get('sslmode') }).toEqual({
        url,
        user: environment.POSTGRES_USER,
        password: environment.POSTGRES_PASSWORD,
        port: hostPort,
        database: `/${environment.POSTGRES_DB}`,
        sslmode: 'disable',
      });
    }
  });
});

// ---------------------------------------------------------------------------
// Dockerfile

describe('Dockerfile', () => {
  test('two stages on Node 20', async () => {
    const dockerfile = await readDockerfile(join(repositoryRoot, 'Dockerfile'));
    const froms = dockerfile.getFROMs();
    const runs = dockerfile.getInstructions().filter((instruction) => instruction.getKeyword() === 'RUN');

    expect(froms.map((from) => [from.getImage(), from.getBuildStage()])).toEqual([
      ['node:20-bookworm-slim', 'build'],
      ['node:20-bookworm-slim', null],
    ]);
    expect(runs.map((run) => run.getArgumentsContent())).toEqual(['npm ci', 'npm prune --omit=dev']);
    expect(dockerfile.getENTRYPOINTs().map((entrypoint) => entrypoint.getJSONStrings().map((value) => value.getJSONValue()))).toEqual([['node', '/app/bin/insights-privacy.js']]);
  });

  test('.dockerignore keeps host builds out', async () => {
    const ignored = await dockerignoreFilter(repositoryRoot);

    for (const path of ['node_modules', 'node_modules/pg/package.json', 'dist/cli/main.js', '.git', '.cache/postgres13']) expect({ path, ignored: ignored(path) }).toEqual({ path, ignored: true });
    for (const path of ['src/cli/main.ts', 'bin/insights-privacy.js', 'sql-templates/trigger.sql', 'package-lock.json']) expect({ path, ignored: ignored(path) }).toEqual({ path, ignored: false });
  });

  slowDescribe('build replayed without Docker', () => {
    let image: BuiltStage;
    let coder: CoderDatabase;

    beforeAll(async () => {
      const dockerfile = await readDockerfile(join(repositoryRoot, 'Dockerfile'));
      const build = await replayBuild(dockerfile, repositoryRoot);
      image = build.stages[build.stages.length - 1];
      coder = await createCoderDatabase('deploy_image', '2026');
    }, 600_000);

    afterAll(async () => {
      await coder?.close();
      if (image) await rm(join(image.dir, '..'), { recursive: true, force: true });
    });

    /**
     * Runs the image's entrypoint on this machine. Under root it runs as the
     * image's numeric USER, on files owned by root, so that a write into the
     * image would fail as it would with readOnlyRootFilesystem.
     */
    async function runImage(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ProcessRun> {
      const [command, ...entryArgs] = localEntrypoint(image);
      const [uid, gid] = (image.user ?? '').split(':').map(Number);
      const asImageUser = process.getuid?.() === 0 ? { uid, gid } : {};
      await chmod(join(image.dir, '..'), 0o755);
      return runProcess(command === 'node' ? process.execPath : command, [...entryArgs, ...args], {
        cwd: image.dir,
        env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: '/nonexistent', ...image.env, ...env },
        ...asImageUser,
      });
    }

    test('--version', async () => {
      const run = await runImage(['--version']);

      expect(run.stderr).toBe('');
      expect(run.stdout).toBe(`${packageVersion}\n`);
      expect(run.code).toBe(ExitCode.ok);
    });

    // typescript stays: npm prune --omit=dev keeps it because cosmiconfig, a
    // runtime dependency, names it as an optional peer.
    test('no development packages', async () => {
      await expect(access(join(image.dir, 'node_modules', 'pg'))).resolves.toBeUndefined();
      for (const name of ['jest', 'ts-jest', '@types/node', 'yaml']) await expect(access(join(image.dir, 'node_modules', name))).rejects.toThrow('ENOENT');
      await expect(access(join(image.dir, 'src'))).rejects.toThrow('ENOENT');
    });

    test('Job arguments work', async () => {
      const env = { INSIGHTS_PRIVACY_DATABASE_URL: coderConnectionUrl(coder.database.url) };

      const apply = await runImage(['apply', '--mode', 'anonymize', '--yes'], env);
      const check = await runImage(['status', '--check', '--no-counts'], env);

      expect(apply.stderr).toBe('');
      expect(apply.code).toBe(ExitCode.ok);
      expect(check.code).toBe(ExitCode.ok);
    });
  });
});
