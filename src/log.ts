import pino, { type Logger } from 'pino';
import { scrubSecrets } from './secrets.js';

export type { Logger };

/**
 * JSON logs on stderr only: in stdio mode stdout carries the MCP protocol and nothing else.
 * Known header/field names are redacted by pino; every serialized line is also scrubbed of the
 * secret values in use, so a token that slips into a message or an error still never appears.
 */
export function createLogger(level: string = 'info', destination: pino.DestinationStream = pino.destination(2)): Logger {
  return pino(
    {
      level,
      base: { service: 'customer-success-mcp' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: [
          'authorization',
          'Authorization',
          '*.authorization',
          '*.Authorization',
          'headers.authorization',
          'headers.Authorization',
          '*.headers.authorization',
          '*.headers.Authorization',
          'token',
          'accessToken',
          'apiKey',
          'api_key',
          '*.token',
          '*.accessToken',
          '*.apiKey',
          '*.api_key',
          '*.secret',
        ],
        censor: '[REDACTED]',
      },
      hooks: { streamWrite: (line: string) => scrubSecrets(line) },
    },
    destination,
  );
}
