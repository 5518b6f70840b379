import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { build } from 'esbuild';
import { chromium, type Browser, type Page } from 'playwright-core';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';

/**
 * Debian's Chromium (scripts/install-browser.sh), driven by playwright-core. Without it the browser tests
 * are skipped with the reason printed — unless REQUIRE_BROWSER=1 (CI), where that is a failure.
 */
export const CHROMIUM = '/usr/bin/chromium';

export function browserAvailable(): boolean {
  if (fs.existsSync(CHROMIUM)) return true;
  const why = `${CHROMIUM} is absent (run scripts/install-browser.sh)`;
  if (process.env.REQUIRE_BROWSER === '1') throw new Error(`REQUIRE_BROWSER=1 but ${why}`);
  console.warn(`skipping the browser tests: ${why}`);
  return false;
}

/**
 * A screenshot of the page as it is (not `fullPage`: that resizes the viewport, the view then resizes
 * its frame, and the frame is captured blank mid-resize). Written to docs/screenshots/ under
 * UPDATE_SCREENSHOTS=1 (how the committed ones are made), else to a temporary folder.
 */
let shotDir: string | undefined;
export async function screenshot(page: Page, name: string): Promise<void> {
  shotDir ??= process.env.UPDATE_SCREENSHOTS === '1' ? path.resolve(import.meta.dirname, '../../docs/screenshots') : fs.mkdtempSync(path.join(os.tmpdir(), 'csmcp-shots-'));
  fs.mkdirSync(shotDir, { recursive: true });
  await page.screenshot({ path: path.join(shotDir, `${name}.png`) });
}

/** One browser per test file; Playwright gives each launch a fresh, empty profile (user data dir) of its own. */
export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
}

/** The test host: a page that loads a view in a sandboxed frame over the extension's own host bridge (AppBridge). */
let hostScript: Promise<string> | undefined;
function bundleHost(): Promise<string> {
  hostScript ??= build({
    entryPoints: [path.resolve(import.meta.dirname, '../browser/host.ts')],
    bundle: true,
    format: 'esm',
    write: false,
    logLevel: 'warning',
  }).then((r) => r.outputFiles[0]!.text.replace(/<\/(script)/gi, '<\\/$1'));
  return hostScript;
}

export interface ViewPage {
  page: Page;
  /** The view's frame. */
  view(): import('playwright-core').Frame;
  /** Tool calls the view made through the host, in order. */
  calls: Array<{ name: string; arguments: unknown }>;
}

/**
 * Opens the host page, reads the view's resource from the server (as a host does), and loads it with the
 * tool's input and result. The view's tool calls go through the host bridge to `client`.
 */
export async function openView(browser: Browser, client: Client, uri: string, input: Record<string, unknown>, result: unknown): Promise<ViewPage> {
  const page = await browser.newPage({ viewport: { width: 1100, height: 1000 } });
  const calls: ViewPage['calls'] = [];
  page.on('pageerror', (e) => console.error('host page error:', e.message));
  await page.exposeFunction('hostCallTool', async (params: { name: string; arguments: Record<string, unknown> }) => {
    calls.push(params);
    return client.callTool(params);
  });
  const read = await client.readResource({ uri });
  const content = read.contents[0] as { text: string; mimeType: string };
  if (content.mimeType !== 'text/html;profile=mcp-app') throw new Error(`unexpected view MIME type ${content.mimeType}`);
  await page.setContent(`<!doctype html><html><body style="margin:0"><script type="module">${await bundleHost()}</script></body></html>`);
  await page.waitForFunction(() => typeof (globalThis as any).loadView === 'function');
  await page.evaluate(([html, i, r]) => (globalThis as any).loadView(html, i, r), [content.text, input, result] as const);
  const view = () => page.frames().find((f) => f !== page.mainFrame() && f.parentFrame() === page.mainFrame())!;
  return { page, view, calls };
}
