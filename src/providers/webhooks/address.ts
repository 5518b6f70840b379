import dns from 'node:dns/promises';
import { isIP, type LookupFunction } from 'node:net';
import ipaddr from 'ipaddr.js';

/**
 * Where a webhook may connect: public addresses only, unless the operator opted the origin in
 * (AUTOMATION_WEBHOOK_PRIVATE_ORIGINS) for a service on their own network; cloud metadata endpoints
 * never. A name is resolved once, every address it resolves to is checked, and the connection is made
 * to those checked addresses only (a pinned `lookup`), so a second resolution cannot point it elsewhere
 * (DNS rebinding).
 */

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

/** Resolves a host name to all its addresses (the system resolver by default; tests inject names). */
export type WebhookLookup = (hostname: string) => Promise<ResolvedAddress[]>;

export const systemLookup: WebhookLookup = async (hostname) =>
  (await dns.lookup(hostname, { all: true, verbatim: true })).map((a) => ({ address: a.address, family: a.family === 6 ? 6 : 4 }));

/** Instance metadata services (AWS, GCP, Azure, Alibaba, ECS): credentials live there. Never reachable. */
const METADATA = new Set(['169.254.169.254', '169.254.170.2', 'fd00:ec2::254', '100.100.100.200', '168.63.129.16'].map((a) => ipaddr.parse(a).toNormalizedString()));

const RANGE_WORDS: Record<string, string> = {
  loopback: 'a loopback address',
  private: 'a private address',
  uniqueLocal: 'a private (unique local) address',
  linkLocal: 'a link-local address',
  carrierGradeNat: 'a shared (carrier-grade NAT) address',
  unspecified: 'the unspecified address',
  broadcast: 'a broadcast address',
  multicast: 'a multicast address',
};

/**
 * Why a connection to `address` is refused, in words, or undefined when it is allowed. Only ordinary
 * public unicast addresses are allowed without the opt-in; with it, any address but a metadata one.
 */
export function addressRefusal(address: string, privateAllowed: boolean): string | undefined {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = ipaddr.parse(address);
  } catch {
    return 'not an IP address';
  }
  // ::ffff:127.0.0.1 is 127.0.0.1.
  if (ip.kind() === 'ipv6' && (ip as ipaddr.IPv6).isIPv4MappedAddress()) ip = (ip as ipaddr.IPv6).toIPv4Address();
  if (METADATA.has(ip.toNormalizedString())) return 'a cloud metadata address (never reachable)';
  const range = ip.range();
  if (range === 'unicast' || privateAllowed) return undefined;
  return RANGE_WORDS[range] ?? `a reserved address (${range})`;
}

/** The address a URL names literally (IPv6 without its brackets), or undefined for a name. */
export function literalAddress(hostname: string): string | undefined {
  const h = hostname.replace(/^\[|\]$/g, '');
  return isIP(h) ? h : undefined;
}

/** A `lookup` for net/tls.connect that answers only the addresses already checked, never asking DNS again. */
export function pinnedLookup(addresses: ResolvedAddress[]): LookupFunction {
  return ((_hostname: string, options: { family?: number | string; all?: boolean }, callback: (...args: unknown[]) => void) => {
    const family = options.family === 4 || options.family === 'IPv4' ? 4 : options.family === 6 || options.family === 'IPv6' ? 6 : undefined;
    const list = family ? addresses.filter((a) => a.family === family) : addresses;
    if (!list.length) {
      callback(Object.assign(new Error(`no IPv${family} address was checked for this host`), { code: 'ENOTFOUND' }));
      return;
    }
    if (options.all) callback(null, list.map((a) => ({ address: a.address, family: a.family })));
    else callback(null, list[0]!.address, list[0]!.family);
  }) as unknown as LookupFunction;
}
