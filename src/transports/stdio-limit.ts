import { Transform, type TransformCallback } from 'node:stream';

/**
 * A line (one JSON-RPC message) over the limit, as far as it can be known without keeping it: its size,
 * its first and last bytes (where `method` and `id` are).
 */
export interface OversizedLine {
  bytes: number;
  head: string;
  tail: string;
}

const KEEP = 512;

/**
 * Sits between stdin and the SDK's stdio transport, whose read buffer throws on a message over its limit
 * and then closes the transport (the server exits). Here a line over `limit` bytes is dropped as it
 * streams in — never held whole — and reported to `onOversized`; complete lines within the limit pass
 * through unchanged, one line per chunk, so the SDK's buffer never holds more than one message.
 */
export class BoundedLineReader extends Transform {
  private pending: Buffer[] = [];
  private size = 0;
  private discarding = false;
  private head = Buffer.alloc(0);
  private tail = Buffer.alloc(0);

  constructor(
    private readonly limit: number,
    private readonly onOversized: (line: OversizedLine) => void,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    let start = 0;
    while (start <= chunk.length) {
      const nl = chunk.indexOf(0x0a, start);
      const piece = chunk.subarray(start, nl === -1 ? chunk.length : nl);
      this.append(piece);
      if (nl === -1) break;
      this.endLine();
      start = nl + 1;
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.size > 0 || this.discarding) this.endLine(false);
    done();
  }

  private append(piece: Buffer): void {
    if (!piece.length) return;
    this.size += piece.length;
    if (!this.discarding && this.size > this.limit) {
      const held = Buffer.concat([...this.pending, piece]);
      this.pending = [];
      this.discarding = true;
      this.head = held.subarray(0, KEEP);
      this.tail = held.subarray(-KEEP);
      return;
    }
    if (this.discarding) this.tail = Buffer.concat([this.tail, piece]).subarray(-KEEP);
    else this.pending.push(piece);
  }

  private endLine(withNewline = true): void {
    if (this.discarding) {
      this.onOversized({ bytes: this.size, head: this.head.toString('utf8'), tail: this.tail.toString('utf8').replace(/\r$/, '') });
    } else if (this.pending.length) {
      this.push(Buffer.concat(withNewline ? [...this.pending, Buffer.from('\n')] : this.pending));
    }
    this.pending = [];
    this.size = 0;
    this.discarding = false;
    this.head = Buffer.alloc(0);
    this.tail = Buffer.alloc(0);
  }
}

const ID = String.raw`(-?\d{1,16}|"(?:[^"\\]|\\.){0,200}")`;

/**
 * The request's method, when it is one of the message's leading keys (before any nested object, so a
 * "method" inside params is never mistaken for it), and its id, at the start or the end of the message
 * (the SDK's client writes `{"method":…,"params":…,"jsonrpc":"2.0","id":N}`).
 */
export function identifyRequest(line: OversizedLine): { method?: string; id?: string | number } {
  const method = /^\s*\{(?:\s*"(?:jsonrpc|id)"\s*:\s*(?:"[^"\\]{0,200}"|-?\d{1,16})\s*,)*\s*"method"\s*:\s*"([^"\\]{1,100})"/.exec(line.head)?.[1];
  const idText =
    new RegExp(String.raw`"id"\s*:\s*${ID}\s*\}\s*$`).exec(line.tail)?.[1] ??
    new RegExp(String.raw`^\s*\{(?:\s*"(?:jsonrpc|method)"\s*:\s*"[^"\\]{0,200}"\s*,)*\s*"id"\s*:\s*${ID}`).exec(line.head)?.[1];
  let id: string | number | undefined;
  try {
    id = idText === undefined ? undefined : (JSON.parse(idText) as string | number);
  } catch {
    id = undefined;
  }
  return { method, id };
}
