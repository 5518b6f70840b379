import { AsyncLocalStorage } from 'node:async_hooks';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import type { Actor } from '../mcp/tool.js';

/**
 * Who made a call, with sign-in: the access token's subject (plus its name and email claims), never
 * what the model wrote. The adapter (mcp/register.ts) runs each tool call as its actor, so the layers
 * that record one (the audit log, the timeline, campaigns, workflows, confirmation tokens) read it
 * here instead of every signature carrying it. Without sign-in there is none, and nothing changes.
 */

/** What the HTTP sign-in keeps of a verified token in AuthInfo.extra.who (never the token itself). */
export interface TokenSubject {
  subject: string;
  name?: string;
  email?: string;
}

/** Longest label recorded (the tools' own actor / created_by fields take 200 characters). */
const MAX_LABEL = 200;

/** The actor of a verified token: labelled "Name <email> (sub)", as much of it as the token gives. */
export function actorOf(auth: AuthInfo | undefined): Actor | undefined {
  const who = auth?.extra?.who as TokenSubject | undefined;
  if (!who?.subject) return undefined;
  const shown = [who.name, who.email && (who.name ? `<${who.email}>` : who.email)].filter(Boolean).join(' ');
  const label = shown ? `${shown} (${who.subject})` : who.subject;
  return { ...who, label: label.length > MAX_LABEL ? `${label.slice(0, MAX_LABEL - 1)}…` : label };
}

const current = new AsyncLocalStorage<Actor | undefined>();

/**
 * Runs `fn` as `actor` (undefined: nobody signed in). Without sign-in the storage is never entered:
 * once it is, Node 20 turns on promise hooks for the whole process, which makes every promise dearer
 * (delivery's included). A tool call starts from the transport's event, outside any earlier call's
 * context, so it reads no actor unless it was given one.
 */
export function runAs<T>(actor: Actor | undefined, fn: () => T): T {
  return actor ? current.run(actor, fn) : fn();
}

/** The signed-in person of the tool call in progress, if any. */
export function currentActor(): Actor | undefined {
  return current.getStore();
}
