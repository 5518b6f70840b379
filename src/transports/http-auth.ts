import { InvalidTokenError, ServerError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { metadataHandler } from '@modelcontextprotocol/sdk/server/auth/handlers/metadata.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import type { OAuthTokenVerifier } from '@modelcontextprotocol/sdk/server/auth/provider.js';
import { getOAuthProtectedResourceMetadataUrl } from '@modelcontextprotocol/sdk/server/auth/router.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { LRUCache } from 'lru-cache';
import { createRemoteJWKSet, decodeJwt, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import type { OAuthConfig } from '../config.js';
import type { Logger } from '../log.js';
import { enabledTools } from '../mcp/toolsets.js';
import { SCOPES, scopeFor } from '../mcp/tool.js';
import type { TokenSubject } from '../safety/actor.js';
import type { Services } from '../services.js';
import { allTools } from '../tools/index.js';

/**
 * Sign-in for HTTP mode: this server is an OAuth 2.1 resource server (MCP authorization, 2025-06-18 /
 * 2025-11-25). It accepts only access tokens of MCP_OAUTH_ISSUER for this resource:
 * - JWTs checked against the issuer's keys (its metadata's jwks_uri, cached; an unknown key id fetches
 *   the set again, so rotated keys are picked up), with iss, aud (RFC 8707), exp and nbf;
 * - other (opaque) tokens through the issuer's introspection endpoint (RFC 7662) when configured.
 * It publishes its Protected Resource Metadata (RFC 9728), answers a missing or bad token with 401 and
 * `WWW-Authenticate: Bearer resource_metadata=…`, and a call its token's scopes do not allow with 403
 * `insufficient_scope` naming the scope (so a client can step up). The token stays here: providers are
 * called with their own keys, and the token is neither logged nor recorded.
 */

const str = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() ? v.trim() : undefined);

/** Scopes as issuers write them: `scope` (space-separated, RFC 9068 / 8693), or `scp` (a list: Okta; a string: Entra). */
function scopesIn(claims: Record<string, unknown>): string[] {
  const raw = claims.scope ?? claims.scp;
  if (Array.isArray(raw)) return raw.filter((s): s is string => typeof s === 'string');
  return typeof raw === 'string' ? raw.split(' ').filter(Boolean) : [];
}

function authInfoOf(token: string, claims: Record<string, unknown>, resource: string): AuthInfo {
  const clientId = str(claims.client_id) ?? str(claims.azp) ?? str(claims.appid) ?? '';
  const subject = str(claims.sub) ?? clientId;
  if (!subject) throw new InvalidTokenError('The token names no subject (sub).');
  const who: TokenSubject = { subject, name: str(claims.name), email: str(claims.email) ?? str(claims.preferred_username)?.match(/^[^@\s]+@[^@\s]+$/)?.[0] };
  return { token, clientId, scopes: scopesIn(claims), expiresAt: typeof claims.exp === 'number' ? claims.exp : undefined, resource: new URL(resource), extra: { who } };
}

/** The issuer's metadata (RFC 8414, else OpenID Connect discovery). */
async function discover(issuer: string): Promise<Record<string, unknown>> {
  const base = issuer.replace(/\/$/, '');
  const u = new URL(issuer);
  const path = u.pathname === '/' ? '' : u.pathname.replace(/\/$/, '');
  // RFC 8414 inserts the well-known part before the issuer's path; OIDC appends it.
  const candidates = [`${u.origin}/.well-known/oauth-authorization-server${path}`, `${base}/.well-known/openid-configuration`, `${u.origin}/.well-known/openid-configuration${path}`];
  const failures: string[] = [];
  for (const url of candidates) {
    try {
      const res = await fetch(url, { headers: { Accept: 'application/json' }, signal: AbortSignal.timeout(10_000) });
      if (!res.ok) {
        failures.push(`${url}: HTTP ${res.status}`);
        continue;
      }
      const meta = (await res.json()) as Record<string, unknown>;
      if (meta.issuer !== issuer && String(meta.issuer).replace(/\/$/, '') !== base) {
        failures.push(`${url}: names issuer ${JSON.stringify(meta.issuer)}`);
        continue;
      }
      return meta;
    } catch (err) {
      failures.push(`${url}: ${(err as Error).message}`);
    }
  }
  throw new Error(`no authorization server metadata for ${issuer} (${failures.join('; ')})`);
}

/** Verifies this issuer's access tokens for this resource. */
export class IssuerTokenVerifier implements OAuthTokenVerifier {
  private keys?: Promise<ReturnType<typeof createRemoteJWKSet>>;

  constructor(
    private readonly cfg: OAuthConfig,
    private readonly log: Logger,
  ) {}

  /** The key set, from MCP_OAUTH_JWKS_URL or the issuer's metadata; discovered once (again after a failure). */
  private jwks(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    this.keys ??= (async () => {
      const url = this.cfg.jwksUrl ?? str((await discover(this.cfg.issuer)).jwks_uri);
      if (!url) throw new Error(`the metadata of ${this.cfg.issuer} names no jwks_uri`);
      return createRemoteJWKSet(new URL(url), { cacheMaxAge: this.cfg.jwksCacheMs, cooldownDuration: this.cfg.jwksCooldownMs, timeoutDuration: 10_000 });
    })();
    this.keys.catch(() => (this.keys = undefined));
    return this.keys;
  }

  async verifyAccessToken(token: string): Promise<AuthInfo> {
    let isJwt = false;
    try {
      decodeJwt(token);
      isJwt = true;
    } catch {
      // not a JWT: an opaque token
    }
    if (isJwt) return this.verifyJwt(token);
    if (this.cfg.introspection) return this.introspect(token);
    throw new InvalidTokenError('The token is not a JWT, and this server has no introspection endpoint (MCP_OAUTH_INTROSPECTION_URL) for other tokens.');
  }

  private async verifyJwt(token: string): Promise<AuthInfo> {
    let keys: ReturnType<typeof createRemoteJWKSet>;
    try {
      keys = await this.jwks();
    } catch (err) {
      this.log.error({ err: (err as Error).message, issuer: this.cfg.issuer }, 'sign-in: the issuer\'s keys cannot be found');
      throw new ServerError('The issuer\'s signing keys cannot be fetched; try again shortly.');
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: this.cfg.issuer,
        audience: this.cfg.audience,
        clockTolerance: this.cfg.clockToleranceS,
        requiredClaims: ['exp'],
      }));
    } catch (err) {
      throw this.refusal(err);
    }
    return authInfoOf(token, payload, this.cfg.resource);
  }

  /** A verification failure as the client should see it: which check failed, never the token. */
  private refusal(err: unknown): Error {
    if (err instanceof joseErrors.JWTExpired) return new InvalidTokenError('The token has expired.');
    if (err instanceof joseErrors.JWTClaimValidationFailed) {
      if (err.claim === 'aud') return new InvalidTokenError('The token was issued for another resource (its audience is not this server).');
      if (err.claim === 'iss') return new InvalidTokenError('The token was issued by another issuer.');
      if (err.claim === 'nbf') return new InvalidTokenError('The token is not valid yet.');
      return new InvalidTokenError(`The token's ${err.claim} claim is not acceptable.`);
    }
    if (err instanceof joseErrors.JWKSNoMatchingKey) return new InvalidTokenError('The token is signed with a key the issuer does not publish.');
    if (err instanceof joseErrors.JWKSTimeout || (err instanceof Error && /fetch failed|ECONNREFUSED/.test(err.message))) {
      this.log.error({ err: err.message, issuer: this.cfg.issuer }, 'sign-in: the issuer\'s keys cannot be fetched');
      return new ServerError('The issuer\'s signing keys cannot be fetched; try again shortly.');
    }
    if (err instanceof joseErrors.JOSEError) return new InvalidTokenError('The token\'s signature or format is not valid.');
    return err instanceof Error ? err : new Error(String(err));
  }

  /** RFC 7662: the issuer says whether the token is active, for whom and for what. */
  private async introspect(token: string): Promise<AuthInfo> {
    const { url, clientId, clientSecret } = this.cfg.introspection!;
    let claims: Record<string, unknown>;
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/x-www-form-urlencoded',
          Accept: 'application/json',
          Authorization: `Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')}`,
        },
        body: new URLSearchParams({ token, token_type_hint: 'access_token' }),
        signal: AbortSignal.timeout(10_000),
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      claims = (await res.json()) as Record<string, unknown>;
    } catch (err) {
      this.log.error({ err: (err as Error).message, url }, 'sign-in: token introspection failed');
      throw new ServerError('The issuer could not be asked about the token; try again shortly.');
    }
    if (claims.active !== true) throw new InvalidTokenError('The token is not active (expired, revoked or unknown to the issuer).');
    if (claims.iss !== undefined && claims.iss !== this.cfg.issuer) throw new InvalidTokenError('The token was issued by another issuer.');
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.includes(this.cfg.audience)) throw new InvalidTokenError('The token was issued for another resource (its audience is not this server).');
    const now = Date.now() / 1000;
    if (typeof claims.exp !== 'number' || claims.exp + this.cfg.clockToleranceS < now) throw new InvalidTokenError('The token has expired.');
    if (typeof claims.nbf === 'number' && claims.nbf - this.cfg.clockToleranceS > now) throw new InvalidTokenError('The token is not valid yet.');
    return authInfoOf(token, claims, this.cfg.resource);
  }
}

export interface SignIn {
  /** RFC 9728 metadata (mount before the Origin check: web clients fetch it from other origins). */
  metadata: RequestHandler;
  /** Verifies the token of every /mcp request (before its body is read), and keeps each session to the person who started it. */
  authenticate: RequestHandler[];
  /** After the body is parsed: refuses a tool call the token's scopes do not allow, with the step-up 403. */
  stepUp: RequestHandler;
}

/**
 * A session belongs to the person who started it: a request of another subject naming its
 * Mcp-Session-Id (a leaked or guessed id) gets the protocol's "session not found" and starts its own.
 * Each call is judged by its own token anyway; this keeps one person's server→client stream
 * (notifications, elicitation) from another. The first signed-in request naming a session (the
 * initializing client's own next request: only it has learnt the id) claims it; owners are remembered
 * as long as a session can live.
 */
function sessionOwners(http: { maxSessions: number; sessionIdleMs: number }): RequestHandler {
  const owners = new LRUCache<string, string>({ max: http.maxSessions * 2, ttl: http.sessionIdleMs, updateAgeOnGet: true });
  return (req, res, next) => {
    const subject = (req.auth?.extra?.who as TokenSubject | undefined)?.subject;
    const id = req.headers['mcp-session-id'];
    if (typeof id === 'string' && subject !== undefined) {
      const owner = owners.get(id);
      if (owner === undefined) owners.set(id, subject);
      else if (owner !== subject) {
        res.status(404).json({ jsonrpc: '2.0', error: { code: -32001, message: 'Session not found for this sign-in: it was started by another person. Start your own session with an initialize request without Mcp-Session-Id.' }, id: null });
        return;
      }
    }
    next();
  };
}

export function createSignIn(services: Services, cfg: OAuthConfig): SignIn {
  const log = services.log.child({ component: 'sign-in' });
  const resourceUrl = new URL(cfg.resource);
  const metadataUrl = getOAuthProtectedResourceMetadataUrl(resourceUrl);
  const prm = metadataHandler({
    resource: resourceUrl.href,
    authorization_servers: [cfg.issuer],
    scopes_supported: [...SCOPES],
    bearer_methods_supported: ['header'],
    resource_name: 'customer-success-mcp',
  });
  const metadata = express.Router();
  // The path-suffixed form (RFC 9728 §3.1) first; the root form for clients that look there.
  const suffixed = new URL(metadataUrl).pathname;
  metadata.use(suffixed, prm);
  if (suffixed !== '/.well-known/oauth-protected-resource') metadata.use('/.well-known/oauth-protected-resource', prm);

  const tools = () => enabledTools(services.config, allTools);
  const stepUp = (req: Request, res: Response, next: NextFunction) => {
    const granted = new Set(req.auth?.scopes ?? []);
    for (const message of Array.isArray(req.body) ? req.body : [req.body]) {
      const m = message as { method?: unknown; params?: { name?: unknown; arguments?: unknown } } | null;
      if (m?.method !== 'tools/call' || typeof m.params?.name !== 'string') continue;
      const tool = tools().find((t) => t.name === m.params!.name);
      if (!tool) continue; // the MCP server answers an unknown tool
      const args = m.params.arguments && typeof m.params.arguments === 'object' ? (m.params.arguments as Record<string, unknown>) : {};
      const needed = scopeFor(tool, args);
      if (granted.has(needed)) continue;
      const scope = [...new Set([...(req.auth?.scopes ?? []), needed])].join(' ');
      const message_ = `${tool.name} needs the ${needed} scope${args.confirmation_token !== undefined ? ' (confirming)' : ''}, which this token does not carry. Sign in again asking for scope "${scope}".`;
      res
        .status(403)
        .set('WWW-Authenticate', `Bearer error="insufficient_scope", scope="${scope}", resource_metadata="${metadataUrl}", error_description="${message_.replace(/"/g, "'")}"`)
        .json({ jsonrpc: '2.0', error: { code: -32003, message: `Forbidden: ${message_}`, data: { required_scope: needed } }, id: (message as { id?: unknown }).id ?? null });
      return;
    }
    next();
  };

  return {
    metadata,
    authenticate: [
      requireBearerAuth({ verifier: new IssuerTokenVerifier(cfg, log), requiredScopes: cfg.requiredScopes, resourceMetadataUrl: metadataUrl }),
      sessionOwners(services.config.http),
    ],
    stepUp,
  };
}
