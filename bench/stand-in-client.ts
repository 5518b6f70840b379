/**
 * Starts bench/stand-in-process.ts as a child process (`node --import tsx`, with an IPC channel) and
 * talks to it: the benchmark's own process then holds only the server, so its CPU time is the server's.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { StandInMark, StandInProcessOptions, StandInStats } from './stand-in-process.js';

const SCRIPT = path.resolve(import.meta.dirname, 'stand-in-process.ts');

export class StandInClient {
  private nextId = 1;
  private readonly pending = new Map<number, (body: unknown) => void>();

  private constructor(
    private readonly child: ChildProcess,
    readonly url: string,
  ) {
    child.on('message', (msg: { id: number; body: unknown }) => {
      const resolve = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      resolve?.(msg.body);
    });
  }

  static async start(opts: StandInProcessOptions): Promise<StandInClient> {
    const child = fork(SCRIPT, [JSON.stringify(opts)], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const url = await new Promise<string>((resolve, reject) => {
      child.once('message', (msg: { body: string }) => resolve(msg.body));
      child.once('exit', (code) => reject(new Error(`stand-in process exited (${code}) before it listened`)));
    });
    return new StandInClient(child, url);
  }

  get pid(): number {
    return this.child.pid!;
  }

  private ask<T>(msg: Record<string, unknown>): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, resolve as (body: unknown) => void);
      this.child.send({ ...msg, id }, (err) => err && reject(err));
    });
  }

  /** Intercom: contacts the search will find, one per address; returns their ids. */
  seed(emails: string[]): Promise<string[]> {
    return this.ask({ type: 'seed', emails });
  }

  mark(): Promise<StandInMark> {
    return this.ask({ type: 'mark' });
  }

  stats(since: StandInMark): Promise<StandInStats> {
    return this.ask({ type: 'stats', since });
  }

  /** Stops the stand-in; throws if it recorded contract violations (a request our server got wrong). */
  async stop(): Promise<void> {
    if (!this.child.connected) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    const violations = await this.ask<Array<{ request: string; errors: string[] }>>({ type: 'stop' });
    await exited;
    if (violations.length) throw new Error(`stand-in recorded ${violations.length} contract violation(s): ${JSON.stringify(violations.slice(0, 3))}`);
  }
}
