import { describe, expect, it } from 'vitest';
import { compileTemplates, renderForRecipient, type RenderScope } from '../../src/engine/templating.js';

const scope = (contact: Record<string, unknown>, tokens: Record<string, unknown> = {}): RenderScope => ({
  contact,
  client: { name: 'Acme Corp', health_score: 42, custom: { plan: 'gold' } },
  sender: { name: 'Sam', email: 'sam@ourco.test' },
  campaign: { name: 'Q3 check-in', template_type: 'health_check' },
  tokens,
});

describe('campaign templating', () => {
  it('renders contact, client, sender, campaign and token values', () => {
    const t = compileTemplates(
      { subject: '{{ client.name }}: {{ campaign.name }}', text: 'Hi {{ contact.first_name }}, {{ promo }} / {{ tokens.promo }} from {{ sender.name }} ({{ client.custom.plan }})' },
      ['promo'],
    );
    const r = renderForRecipient(t, scope({ first_name: 'Ann' }, { promo: 'SAVE10' }));
    expect(r).toEqual({ ok: true, subject: 'Acme Corp: Q3 check-in', text: 'Hi Ann, SAVE10 / SAVE10 from Sam (gold)', html: undefined });
  });

  it("uses Intercom's fallback filter (and default) for values a contact lacks", () => {
    const t = compileTemplates({ subject: 'Hello {{ contact.first_name | fallback: "there" }}', text: '{{ contact.role | default: "friend" }}' }, []);
    for (const missing of [undefined, null, '']) {
      const r = renderForRecipient(t, scope({ first_name: missing }));
      expect(r).toMatchObject({ ok: true, subject: 'Hello there', text: 'friend' });
    }
  });

  it('holds back a recipient whose template uses a missing value without fallback, naming it', () => {
    const t = compileTemplates({ subject: 'Hi', text: 'Dear {{ contact.first_name }},' }, []);
    const r = renderForRecipient(t, scope({ first_name: '' }));
    expect(r).toMatchObject({ ok: false, reason: 'missing_value', missing: ['contact.first_name'] });
  });

  it('also catches a missing value hidden behind another filter, or nested', () => {
    const t1 = compileTemplates({ subject: 'Hi', text: '{{ contact.nickname | upcase }}' }, []);
    expect(renderForRecipient(t1, scope({}))).toMatchObject({ ok: false, missing: ['contact.nickname'] });
    const t2 = compileTemplates({ subject: 'Hi', text: '{{ client.custom.region }}' }, []);
    expect(renderForRecipient(t2, scope({}))).toMatchObject({ ok: false, missing: ['client.custom.region'] });
    const t3 = compileTemplates({ subject: 'Hi', text: '{{ "x" | append: contact.nickname }}' }, []);
    expect(renderForRecipient(t3, scope({}))).toMatchObject({ ok: false, missing: ['contact.nickname'] });
  });

  it('treats a missing value as false in conditions without holding anyone back', () => {
    const t = compileTemplates({ subject: 'Hi', text: '{% if contact.first_name %}Hi {{ contact.first_name }}{% else %}Hello{% endif %}' }, []);
    expect(renderForRecipient(t, scope({}))).toMatchObject({ ok: true, text: 'Hello' });
    expect(renderForRecipient(t, scope({ first_name: 'Bo' }))).toMatchObject({ ok: true, text: 'Hi Bo' });
  });

  it('escapes values in the HTML body but not in the text body', () => {
    const t = compileTemplates({ subject: 'Hi', text: '{{ contact.name }}', html: '<p>{{ contact.name }}</p>' }, []);
    expect(renderForRecipient(t, scope({ name: '<script>x</script>' }))).toMatchObject({
      ok: true,
      text: '<script>x</script>',
      html: '<p>&lt;script&gt;x&lt;/script&gt;</p>',
    });
  });

  it('never lets raw template syntax reach a customer', () => {
    const t = compileTemplates({ subject: 'Hi', text: '{% raw %}{{ contact.first_name }}{% endraw %}' }, []);
    expect(renderForRecipient(t, scope({ first_name: 'A' }))).toMatchObject({ ok: false, reason: 'unrendered_template_syntax' });
    const t2 = compileTemplates({ subject: 'Hi', text: '{{ promo }}' }, ['promo']);
    expect(renderForRecipient(t2, scope({}, { promo: '{{ contact.email }}' }))).toMatchObject({ ok: false, reason: 'unrendered_template_syntax' });
  });

  it('refuses syntax errors, unknown variables and file access at compile time, naming the field', () => {
    expect(() => compileTemplates({ subject: 'Hi {{', text: 'x' }, [])).toThrow(/subject_line is not a valid template/);
    expect(() => compileTemplates({ subject: 'Hi', text: '{{ frist_name }}' }, [])).toThrow(/body_text uses \{\{ frist_name \}\}/);
    expect(() => compileTemplates({ subject: 'Hi', text: 'x', html: '{% include "/etc/passwd" %}' }, [])).toThrow(/body_html cannot be used/);
    expect(() => compileTemplates({ subject: 'Hi', text: '{{ x | no_such_filter }}' }, ['x'])).toThrow(/body_text is not a valid template/);
  });

  it('refuses | raw in an HTML body at compile time (invalid_input naming body_html), in every spelling', () => {
    const forms = [
      '<p>{{ contact.first_name | raw }}</p>',
      '<p>{{contact.first_name|raw}}</p>',
      '<p>{{ contact.first_name | upcase |\n raw }}</p>',
      '{% assign v = contact.first_name | raw %}<p>{{ v }}</p>',
      '{% echo contact.first_name | raw %}',
    ];
    for (const html of forms) {
      let caught: unknown;
      try {
        compileTemplates({ subject: 'Hi', text: 'x', html }, []);
      } catch (err) {
        caught = err;
      }
      expect(caught, html).toMatchObject({ code: 'invalid_input', details: { field: 'body_html' } });
      expect((caught as Error).message, html).toMatch(/body_html uses the raw filter, which is not available: every value in an HTML body is HTML-escaped/);
    }
  });

  it('escapes a contact value with markup in an HTML body (what raw would have let through)', () => {
    const t = compileTemplates({ subject: 'Hi', text: 'Hi {{ contact.first_name }}', html: '<p>Hi {{ contact.first_name }}</p>' }, []);
    const r = renderForRecipient(t, scope({ first_name: '<img src=x onerror=alert(1)>' }));
    expect(r).toMatchObject({ ok: true, html: '<p>Hi &lt;img src=x onerror=alert(1)&gt;</p>' });
  });

  it('never exposes internals through prototype properties: the recipient is held back instead', () => {
    const t = compileTemplates({ subject: 'Hi', text: '{{ contact.constructor }}{{ client.__proto__ }}' }, []);
    const r = renderForRecipient(t, scope({}));
    expect(r.ok).toBe(false);
    expect(JSON.stringify(r)).not.toMatch(/function|class /);
  });
});
