import type { CliIo } from '../cli/io.js';
import { ToolError } from '../core/errors.js';

export interface DemoSettings {
  columnSet?: string;
}

export async function runDemo(_io: CliIo, _settings: DemoSettings): Promise<number> {
  throw new ToolError('DEMO_FAILED', 'demo is not built yet');
}
