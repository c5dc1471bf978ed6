import { describe, expect, it } from 'vitest';
import { passwordChanged, ripplesPerTest, webhookApp } from '../support/ripple.js';

const { receiver, ripple } = ripplesPerTest();

/**
 * README (Operations, Secrets in URLs): a peer's refusal is quoted in `lastError` (its first 200
 * characters), with "the same long names as JSON members in echoed response bodies" redacted.
 */
describe("a refusing peer's body quoted in lastError", () => {
  it('a JSON member named *token that the 200-character excerpt cuts is still redacted, in the row and the logs', async () => {
    // A gateway that refuses and echoes what it holds; the token starts just before character 200.
    const token = 'tok_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0ZYXWVUTS';
    const body = JSON.stringify({
      error: 'unauthorized',
      error_description:
        'The request could not be authorized: the signature header is missing or malformed; check the sender configuration',
      api_token: token,
    });
    expect(body.indexOf(token)).toBeLessThan(200);
    expect(body.indexOf(token) + token.length).toBeGreaterThan(200);
    const gateway = await receiver((_r, _n, res) =>
      res.writeHead(401, { 'content-type': 'application/json' }).end(body),
    );
    const t = await ripple({ apps: [webhookApp('audit', gateway.url)] });
    const sent = await t.send(passwordChanged('alice'));
    const ev = await t.waitForEvent(String(sent.json.eventId), ['partial', 'failed']);
    const lastError = String(ev.apps[0]?.lastError);
    expect(lastError).toContain('WEBHOOK_REFUSED');
    expect(lastError).toContain('"error":"unauthorized"');
    expect(lastError).toContain('"api_token":"***');
    expect(lastError).not.toContain('tok_live_9f8e');
    expect(t.rawLogs.join('\n')).not.toContain('tok_live_9f8e');
  });
});
