import { timingSafeEqual } from 'node:crypto';
import net from 'node:net';
import { hostHeaderValidation } from '@modelcontextprotocol/sdk/server/middleware/hostHeaderValidation.js';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { ConfigError, type Config } from '../config.js';

/**
 * Who may talk to the HTTP server: the Host and Origin checks (DNS rebinding, cross-site requests) and
 * the bearer token. Kept apart from the MCP plumbing so the rules can be read (and tested) in one place.
 */

/** A token this long from a random source cannot be guessed; shorter ones are refused on a reachable address. */
export const MIN_TOKEN_LENGTH = 32;
const GENERATE_TOKEN = `node -e "console.log(require('crypto').randomBytes(32).toString('hex'))"`;

const WILDCARD_BINDS = new Set(['0.0.0.0', '::', '[::]', '']);

/** Strips IPv6 brackets ("[::1]" → "::1"). */
function bare(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/**
 * localhost, or an IP literal on the loopback network: 127.0.0.0/8, ::1 (and IPv4-mapped ::ffff:127.x).
 * Parsed as an address, never matched by prefix: "127.evil.example" is a host name, not loopback.
 */
export function isLoopbackHost(host: string): boolean {
  const h = bare(host.trim().toLowerCase());
  if (h === 'localhost') return true;
  if (net.isIPv4(h)) return h.split('.')[0] === '127';
  if (net.isIPv6(h)) {
    if (h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
    const mapped = /^(?:0:0:0:0:0:|::)ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(h)?.[1];
    return mapped !== undefined && net.isIPv4(mapped) && mapped.split('.')[0] === '127';
  }
  return false;
}

/** How a host name appears in a Host header (IPv6 in brackets), for the SDK's host validation. */
function asHostHeaderName(host: string): string {
  const h = bare(host.toLowerCase());
  return net.isIPv6(h) ? `[${h}]` : h;
}

/**
 * Refuses, before anything listens, a configuration that would expose the server:
 * - a non-loopback address without sign-in (MCP_OAUTH_ISSUER) or a token, or with a token short enough to guess;
 * - a wildcard bind (0.0.0.0, ::) without MCP_HTTP_ALLOWED_HOSTS: every request's Host is checked,
 *   and with a wildcard bind only the user knows which names clients will use.
 */
export function assertSafeHttpConfig(http: Config['http']): void {
  if (isLoopbackHost(http.host)) return;
  // With sign-in (MCP_OAUTH_ISSUER) every request carries a token the issuer signed for this resource.
  if (!http.oauth && !http.token) {
    throw new ConfigError(
      `Refusing to serve MCP on ${http.host} without a token: anyone who can reach this address could message your customers. ` +
        `Set MCP_HTTP_TOKEN to a long random value (generate one with: ${GENERATE_TOKEN}; clients send it as "Authorization: Bearer <token>"), or bind to 127.0.0.1.`,
    );
  }
  if (!http.oauth && http.token && http.token.length < MIN_TOKEN_LENGTH) {
    throw new ConfigError(
      `Refusing to serve MCP on ${http.host} with a ${http.token.length}-character MCP_HTTP_TOKEN: on a reachable address the token must be at least ${MIN_TOKEN_LENGTH} random characters. ` +
        `Generate one with: ${GENERATE_TOKEN}`,
    );
  }
  if (WILDCARD_BINDS.has(http.host.trim()) && !http.allowedHosts?.length) {
    throw new ConfigError(
      `Refusing to serve MCP on every interface (${http.host}) without MCP_HTTP_ALLOWED_HOSTS: set it to the host names clients use to reach this server ` +
        '(comma-separated, e.g. "mcp.example.com,10.0.0.5"); requests naming any other Host are refused (DNS-rebinding protection). Or bind MCP_HTTP_HOST to one address.',
    );
  }
}

/** Host header names accepted: loopback names, the bind address itself (unless a wildcard), and MCP_HTTP_ALLOWED_HOSTS. */
export function allowedHostNames(http: Config['http']): string[] {
  const names = new Set(['localhost', '127.0.0.1', '[::1]']);
  if (!WILDCARD_BINDS.has(http.host.trim())) names.add(asHostHeaderName(http.host));
  for (const h of http.allowedHosts ?? []) names.add(asHostHeaderName(h));
  return [...names];
}

function forbidden(res: Response, message: string): void {
  res.status(403).json({ jsonrpc: '2.0', error: { code: -32000, message }, id: null });
}

/** DNS rebinding: a page on evil.example resolving its name to this machine still sends Host: evil.example. */
export function hostCheck(http: Config['http']): RequestHandler {
  return hostHeaderValidation(allowedHostNames(http));
}

/**
 * A browser page on another site must not drive this server (CSRF / DNS rebinding): when a request has
 * an Origin, its host must be loopback (parsed as an address), the bind address, or an allowed host.
 */
export function originCheck(http: Config['http']): RequestHandler {
  const allowed = new Set(allowedHostNames(http).map((h) => bare(h)));
  return (req: Request, res: Response, next: NextFunction) => {
    const origin = req.headers.origin;
    if (origin === undefined) return next();
    let host = '';
    try {
      const u = new URL(origin);
      if (u.protocol === 'http:' || u.protocol === 'https:') host = bare(u.hostname.toLowerCase());
    } catch {
      // not a URL (e.g. "null" from a sandboxed page): refused below
    }
    if (host && (isLoopbackHost(host) || allowed.has(host))) return next();
    forbidden(res, `Origin ${origin} is not allowed: only pages served from this machine (or MCP_HTTP_ALLOWED_HOSTS) may call this server.`);
  };
}

/** Constant-time check of `Authorization: Bearer <token>`; `variable` names the setting in the 401. */
export function bearerAuth(token: string, variable = 'MCP_HTTP_TOKEN'): RequestHandler {
  const expected = Buffer.from(token);
  return (req: Request, res: Response, next: NextFunction) => {
    const given = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1]?.trim() ?? '';
    const buf = Buffer.from(given);
    if (buf.length !== expected.length || !timingSafeEqual(buf, expected)) {
      res.status(401).set('WWW-Authenticate', 'Bearer').json({
        jsonrpc: '2.0',
        error: { code: -32001, message: `Unauthorized: send "Authorization: Bearer <${variable}>".` },
        id: null,
      });
      return;
    }
    next();
  };
}
