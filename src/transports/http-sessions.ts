import type { Server } from '@modelcontextprotocol/sdk/server/index.js';
import type { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { Logger } from '../log.js';

export interface Session {
  id: string;
  transport: StreamableHTTPServerTransport;
  server: Server;
  /** HTTP requests of this session still open (a tool call, an SSE stream). */
  inFlight: number;
  lastActive: number;
}

/**
 * The Streamable HTTP sessions of this process, bounded in number and in time, so memory is bounded:
 * - at most `max` sessions; a new one takes the place of the longest-idle session that has nothing in
 *   flight (evicted: its client gets 404 and, as the protocol says, starts a new session); when every
 *   session has a request open, the new one is refused (the caller answers 503);
 * - a session idle (nothing in flight) for `idleMs` is closed.
 * Evicting rather than refusing: a client that forgot to DELETE its session (most do) must not lock
 * the server for everyone until the idle timeout; a session in use is never cut.
 *
 * The map is kept in least-recently-active order (touching re-inserts), so the eviction candidate is
 * the first idle entry.
 */
export class SessionPool {
  private readonly sessions = new Map<string, Session>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly opts: { max: number; idleMs: number; log: Logger; now?: () => number },
  ) {
    const every = Math.min(Math.max(Math.floor(opts.idleMs / 2), 10), 60_000);
    this.sweeper = setInterval(() => this.sweep(), every);
    this.sweeper.unref();
  }

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  get size(): number {
    return this.sessions.size;
  }

  get(id: string): Session | undefined {
    return this.sessions.get(id);
  }

  /** Makes room for one more session. False when the pool is full of sessions with requests open. */
  makeRoom(): boolean {
    if (this.sessions.size < this.opts.max) return true;
    for (const s of this.sessions.values()) {
      if (s.inFlight === 0) {
        this.opts.log.info({ session: s.id, idle_ms: this.now() - s.lastActive }, 'evicting the longest-idle MCP session: session limit reached');
        this.remove(s);
        return true;
      }
    }
    return false;
  }

  add(id: string, transport: StreamableHTTPServerTransport, server: Server): Session {
    const s: Session = { id, transport, server, inFlight: 0, lastActive: this.now() };
    this.sessions.set(id, s);
    return s;
  }

  /** Counts an HTTP request of the session as open until its response closes. */
  track(s: Session, res: { once(event: 'close', fn: () => void): unknown }): void {
    s.inFlight += 1;
    this.touch(s);
    res.once('close', () => {
      s.inFlight -= 1;
      this.touch(s);
    });
  }

  private touch(s: Session): void {
    s.lastActive = this.now();
    if (this.sessions.get(s.id) === s) {
      this.sessions.delete(s.id);
      this.sessions.set(s.id, s);
    }
  }

  /** Forgets the session and closes its transport and server (idempotent). */
  remove(s: Session): void {
    if (this.sessions.get(s.id) !== s) return;
    this.sessions.delete(s.id);
    void s.transport.close().catch(() => undefined);
    void s.server.close().catch(() => undefined);
  }

  sweep(): void {
    const cutoff = this.now() - this.opts.idleMs;
    for (const s of [...this.sessions.values()]) {
      if (s.inFlight === 0 && s.lastActive <= cutoff) {
        this.opts.log.info({ session: s.id }, 'closing idle MCP session');
        this.remove(s);
      }
    }
  }

  async closeAll(): Promise<void> {
    clearInterval(this.sweeper);
    const all = [...this.sessions.values()];
    this.sessions.clear();
    await Promise.all(all.flatMap((s) => [s.transport.close().catch(() => undefined), s.server.close().catch(() => undefined)]));
  }
}
