import { ConfigError, type Config } from '../config.js';
import { TOOLSETS, type AnyToolDefinition } from './tool.js';

/**
 * Which tools this server offers, enforced by not registering the rest: what is not enabled is not
 * listed and cannot be called. CS_MCP_READ_ONLY keeps only tools that change nothing; CS_MCP_TOOLSETS
 * keeps the named toolsets (plus `status`); CS_MCP_TOOLS_DENY removes tools by name. An unknown name
 * stops start-up, listing the valid ones.
 */
const chosen = new WeakMap<Config, { from: AnyToolDefinition[]; tools: AnyToolDefinition[] }>();

/** The same array for the same config: registration derives schemas once per tool list (see register.ts). */
export function enabledTools(config: Config, tools: AnyToolDefinition[]): AnyToolDefinition[] {
  const known = chosen.get(config);
  if (known?.from === tools) return known.tools;
  const enabled = chooseTools(config, tools);
  chosen.set(config, { from: tools, tools: enabled });
  return enabled;
}

/** Anything that names a tool, its kind and its toolset: a definition, or an entry of the prebuilt listing. */
export interface ToolIdentity {
  name: string;
  kind: string;
  toolset: string;
}

export function chooseTools<T extends ToolIdentity>(config: Config, tools: T[]): T[] {
  const { readOnly, toolsets, toolsDeny } = config.safety;
  const unknownSets = (toolsets ?? []).filter((t) => !(TOOLSETS as readonly string[]).includes(t));
  if (unknownSets.length) {
    throw new ConfigError(`CS_MCP_TOOLSETS names unknown toolset(s): ${unknownSets.join(', ')}. Valid toolsets: ${TOOLSETS.join(', ')}.`);
  }
  const names = new Set(tools.map((t) => t.name));
  const unknownTools = toolsDeny.filter((n) => !names.has(n));
  if (unknownTools.length) {
    throw new ConfigError(`CS_MCP_TOOLS_DENY names unknown tool(s): ${unknownTools.join(', ')}. Valid tools: ${[...names].sort().join(', ')}.`);
  }
  const sets = toolsets ? new Set<string>([...toolsets, 'status']) : undefined;
  const deny = new Set(toolsDeny);
  return tools.filter((t) => (!readOnly || t.kind === 'read') && (!sets || sets.has(t.toolset)) && !deny.has(t.name));
}
