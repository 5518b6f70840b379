import type { ElicitRequest, ElicitResult } from '@modelcontextprotocol/sdk/types.js';

export type Answer = ElicitResult | ((req: ElicitRequest['params']) => ElicitResult);

/** A person at the client: answers each approval request as the test says, and remembers what was asked. */
export function person() {
  const asked: Array<ElicitRequest['params']> = [];
  let answer: Answer = { action: 'accept', content: { decision: 'send' } };
  return {
    asked,
    answers(a: Answer) {
      answer = a;
    },
    onElicit: (req: ElicitRequest['params']) => {
      asked.push(req);
      return typeof answer === 'function' ? answer(req) : answer;
    },
  };
}
