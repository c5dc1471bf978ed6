import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { EXCERPT, excerpt } from '../../src/targets/http.js';
import { redactSecrets } from '../../src/util/redact.js';

describe('redactSecrets', () => {
  it('removes URL userinfo, whatever the password holds', () => {
    const cases: Array<[string, string]> = [
      [
        'POST https://user:pass@audit.example.org/hook: ECONNREFUSED',
        'POST https://***@audit.example.org/hook: ECONNREFUSED',
      ],
      ['https://user:p@ss:w@rd@host:8443/x', 'https://***@host:8443/x'],
      ['http://:only-a-password@127.0.0.1:9/', 'http://***@127.0.0.1:9/'],
      ['https://ghp_abcdef0123456789@github.com/org/repo', 'https://***@github.com/org/repo'],
      ['redis://default:s3cr%40t@[::1]:6379/0', 'redis://***@[::1]:6379/0'],
      ['HTTPS://U:P@HOST', 'HTTPS://***@HOST'],
      ['(see http://a:b@h1/x and ldap://c:d@h2)', '(see http://***@h1/x and ldap://***@h2)'],
      ['"http://a:b@h/x"', '"http://***@h/x"'],
      ['line1\nhttps://u:pw@h\nline3', 'line1\nhttps://***@h\nline3'],
      ['scheme-relative //u:pw@h/x', 'scheme-relative //***@h/x'],
      [
        'fetch: Request cannot be constructed from a URL that includes credentials: http://u:p@127.0.0.1:9/x',
        'fetch: Request cannot be constructed from a URL that includes credentials: http://***@127.0.0.1:9/x',
      ],
    ];
    for (const [input, expected] of cases) expect(redactSecrets(input), input).toBe(expected);
  });

  it('removes the values of secret-looking query, fragment and form parameters', () => {
    const cases: Array<[string, string]> = [
      ['https://h/cb?code=SplxlOBeZQQYbYS6WxSbIA&state=xyz', 'https://h/cb?code=***&state=xyz'],
      ['https://h/x?access_token=abc.def.ghi', 'https://h/x?access_token=***'],
      ['https://h/x?a=1&Refresh-Token=r1&b=2', 'https://h/x?a=1&Refresh-Token=***&b=2'],
      [
        'https://h/x?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA%2F2026',
        'https://h/x?X-Amz-Signature=***&X-Amz-Credential=***',
      ],
      ['https://h/x?sv=2024&sig=abc%2Bdef%3D', 'https://h/x?sv=2024&sig=***'],
      ['https://h/x?api_key=k&apikey=k2&key=k3', 'https://h/x?api_key=***&apikey=***&key=***'],
      ['https://h/x?client_secret=s&password=p&pwd=q', 'https://h/x?client_secret=***&password=***&pwd=***'],
      ['https://h/cb#id_token=eyJ.x.y&token_type=bearer', 'https://h/cb#id_token=***&token_type=bearer'],
      ['<a href="https://h/x?a=1&amp;token=t">', '<a href="https://h/x?a=1&amp;token=***">'],
      ['logout_token=eyJhbGc.eyJzdWI.sig', 'logout_token=***'],
      ['wss://h/socket?Authorization=Bearer%20abc', 'wss://h/socket?Authorization=***'],
      ['https://h/x?token=&b=1', 'https://h/x?token=&b=1'],
      ['bind failed: password=hunter2 rejected', 'bind failed: password=*** rejected'],
      ['POST https://h/x?token=t-1: HTTP 500', 'POST https://h/x?token=***: HTTP 500'],
      ['https://h/x?code=a:b:c&x=1 (see https://h/y?sig=s).', 'https://h/x?code=***&x=1 (see https://h/y?sig=***).'],
    ];
    for (const [input, expected] of cases) expect(redactSecrets(input), input).toBe(expected);
  });

  it('removes secret members of JSON excerpts, not harmless ones', () => {
    expect(redactSecrets('HTTP 400: {"error":"invalid_grant","refresh_token":"r-1\\"x","code":"E42"}')).toBe(
      'HTTP 400: {"error":"invalid_grant","refresh_token":"***","code":"E42"}',
    );
    expect(redactSecrets('{"client_secret" : "s", "clientId": "crm"}')).toBe(
      '{"client_secret" : "***", "clientId": "crm"}',
    );
  });

  it('removes a secret JSON member whose value the text cuts off (an excerpt), not a harmless one', () => {
    expect(redactSecrets('HTTP 401: {"error":"denied","api_token":"tok_live_9f8e7d')).toBe(
      'HTTP 401: {"error":"denied","api_token":"***',
    );
    expect(redactSecrets('{"refresh_token": "r-1\\')).toBe('{"refresh_token": "***');
    expect(redactSecrets('{"error":"denied","detail":"a long expl')).toBe('{"error":"denied","detail":"a long expl');
    expect(redactSecrets(redactSecrets('{"secret":"abc'))).toBe('{"secret":"***');
  });

  it('excerpt: redacts the body before cutting it to EXCERPT characters', () => {
    const token = 'tok_live_9f8e7d6c5b4a39281706f5e4d3c2b1a0ZYXWVUTS';
    const lead = `{"error":"unauthorized","error_description":"${'x'.repeat(130)}",`;
    // The secret member starts before the cut and ends after it; the excerpt keeps its name.
    const body = `${lead}"api_token":"${token}","more":"${'y'.repeat(20_000)}"}`;
    const cut = excerpt(body);
    expect(cut.length).toBeLessThanOrEqual(EXCERPT);
    expect(cut).toContain('"api_token":"***"');
    expect(cut).not.toContain('tok_live');
    expect(excerpt(`  HTTP\n\n  error  ${'z'.repeat(300)}`)).toBe(`HTTP error ${'z'.repeat(EXCERPT - 11)}`);
  });

  it('removes token-like path segments (Slack, Discord, hex, base64url), not ordinary ones', () => {
    const cases: Array<[string, string]> = [
      [
        'https://hooks.slack.com/services/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',
        'https://hooks.slack.com/services/T0ABC1234/B0DEF5678/***',
      ],
      [
        'https://discord.com/api/webhooks/112233445566778899/aB3-cD4_eF5gH6iJ7kL8mN9oP0qR1sT2uV3wX4yZ5-aB6cD7eF8gH9iJ0kL1mN2oP3qR',
        'https://discord.com/api/webhooks/112233445566778899/***',
      ],
      ['https://h/hooks/5f4dcc3b5aa765d61d8327deb882cf99/run', 'https://h/hooks/***/run'],
      ['POST https://h/hooks/5f4dcc3b5aa765d61d8327deb882cf99: ECONNRESET', 'POST https://h/hooks/***: ECONNRESET'],
      ['https://h/hooks/QWErtyUIOpasDFGhjkLZXcvb', 'https://h/hooks/***'],
    ];
    for (const [input, expected] of cases) expect(redactSecrets(input), input).toBe(expected);
    const ordinary = [
      'https://crm.example.org/oidc/backchannel-logout',
      'https://example.my.salesforce.com/services/auth/sp/saml2/logout',
      'https://idp.example.org/idp/profile/SAML2/SOAP/SingleLogoutService',
      'https://h/api/v1/users/12345/sessions/2026-11-27T07:00:00Z',
      'https://h/events/550e8400-e29b-41d4-a716-446655440000',
      'https://h/webhooks/ripple-prod-eu-west-1-primary-receiver',
      'https://h/internationalization/accessibility-guidelines',
      'https://h/x?state=abc&redirect_uri=https%3A%2F%2Frp%2Fcb&monkey=1',
      'http://127.0.0.1:9000/ripple',
    ];
    for (const url of ordinary) expect(redactSecrets(url), url).toBe(url);
  });

  it('leaves text without secrets unchanged, is idempotent, and stays linear on hostile input', () => {
    const plain = [
      '',
      'WEBHOOK_HTTP_STATUS: HTTP 503: upstream busy',
      'LDAP_INVALID_CREDENTIALS: uid=alice,ou=people,dc=example,dc=org (code=49)',
      'alice@example.org changed her password; key rotation at 12:00',
      'a = b, x=1',
    ];
    for (const text of plain) expect(redactSecrets(text), text).toBe(text);

    const messy = 'POST https://u:p@h/hooks/5f4dcc3b5aa765d61d8327deb882cf99?token=t&x=1 {"secret":"s"} password=pw';
    const once = redactSecrets(messy);
    expect(once).not.toMatch(/u:p|5f4dcc|token=t|"s"|pw$/);
    expect(redactSecrets(once)).toBe(once);

    const hostile = [
      'http://'.repeat(50_000),
      `https://${'a'.repeat(200_000)}`,
      `https://${'@'.repeat(200_000)}`,
      'a'.repeat(300_000),
      '?token='.repeat(40_000),
      '"k":"'.repeat(40_000),
      `x://${'/'.repeat(200_000)}`,
      `?token=a${':'.repeat(200_000)}`,
      `https://h/${'.'.repeat(200_000)}x`,
      `${'token='.repeat(30_000)}`,
    ];
    for (const text of hostile) {
      const started = performance.now();
      redactSecrets(text);
      // Generous: a quadratic scan of these inputs takes minutes, a linear one milliseconds.
      expect(performance.now() - started, text.slice(0, 20)).toBeLessThan(2_000);
    }
  });
});

describe('the logger', () => {
  it('redacts URL secrets in lastError, detail, warning, url and logged errors, and censors credential fields', () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'info', destination: { write: (line: string) => lines.push(line) } });
    const leaky = 'POST https://ripple:Hunter2-in-url@audit.example.org/hook?token=tok-123: HTTP 500';
    log.warn({ lastError: leaky, detail: leaky, warning: leaky, url: 'https://u:Hunter2-in-url@h/' }, 'app failed');
    log.error({ err: new Error(leaky, { cause: new Error(leaky) }) }, 'delivery worker error');
    log.info({ password: 'Hunter2-plain', credential: { password: 'x' } }, 'credential fields');
    const text = lines.join('');
    expect(text).not.toContain('Hunter2');
    expect(text).not.toContain('tok-123');
    expect(text).toContain('https://***@audit.example.org/hook?token=***: HTTP 500');
    expect(JSON.parse(lines[2] ?? '{}')).toMatchObject({ password: '[redacted]', credential: '[redacted]' });
  });
});
