/**
 * Build step (`npm run build`, after tsc): writes dist/tool-listing.json, the tools/list answer for every
 * declared tool, so a stdio server lists its tools before the tool modules, the store and the providers
 * have loaded. The server compares it with the live definitions once they load and drops it if they differ.
 */
import fs from 'node:fs';
import { allTools } from '../tools/index.js';
import { PREBUILT_LISTING_FILE, prebuiltEntries } from './tool-listing.js';

fs.writeFileSync(PREBUILT_LISTING_FILE, JSON.stringify(prebuiltEntries(allTools)));
process.stderr.write(`wrote ${PREBUILT_LISTING_FILE.pathname} (${allTools.length} tools)\n`);
