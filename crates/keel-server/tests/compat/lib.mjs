// Shared pieces of the compatibility suite: a fetch that records what Keel
// answered, the checks on what `keel chaos` says, and the table runner.
//
// Why an oracle and not only shape checks: `keel chaos` answers a request as a
// pure function of its seed, the model and the conversation, whichever upstream
// serves it. So when every call of a case was served by a deployment of the
// client's own API, the same case run straight against the chaos upstream must
// give exactly the same result; any difference is something Keel changed.

import { z } from 'zod';

/** The words `keel chaos` writes its text with (crates/keel-chaos/src/generate.rs). */
export const LOREM = new Set(
  ('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut ' +
    'labore et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris ' +
    'nisi aliquip ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse ' +
    'cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non proident sunt culpa qui ' +
    'officia deserunt mollit anim id est laborum keel harbor tide anchor').split(' '),
);

/** A 1x1 PNG, for the image cases. */
export const PNG_BASE64 =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
export const PNG_DATA_URL = `data:image/png;base64,${PNG_BASE64}`;

/**
 * The structured-output schema, as JSON Schema and as zod (the same shape).
 * No numeric ranges: the Anthropic SDK's `jsonSchemaOutputFormat` moves
 * them into the description (Anthropic's structured outputs do not take
 * them), which only a real model follows, not the chaos provider.
 */
export const WEATHER_JSON_SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string' },
    temperature: { type: 'integer' },
    conditions: { type: 'string', enum: ['sunny', 'cloudy', 'rain'] },
  },
  required: ['city', 'temperature', 'conditions'],
  additionalProperties: false,
};
export const Weather = z
  .object({
    city: z.string(),
    temperature: z.number().int(),
    conditions: z.enum(['sunny', 'cloudy', 'rain']),
  })
  .strict();

/** The tool of the tool cases; chaos calls a tool the last user message names. */
export const TOOL_NAME = 'get_weather';
export const TOOL_JSON_SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string' },
    unit: { type: 'string', enum: ['celsius', 'fahrenheit'] },
  },
  required: ['city', 'unit'],
  additionalProperties: false,
};
export const ToolArgs = z.object({ city: z.string(), unit: z.enum(['celsius', 'fahrenheit']) }).strict();
export const TOOL_PROMPT = `Use ${TOOL_NAME} to look up the weather in Paris.`;
export const TOOL_RESULT = '{"temperature": 21, "conditions": "sunny"}';

/** Generous limit: a chaos answer has at most 48 words, so nothing is cut (and continued). */
export const MAX_TOKENS = 1000;

/**
 * A `fetch` for the clients that records, per HTTP exchange, the status, the
 * deployment Keel says served it, and the request body the client sent.
 */
export function tap() {
  const t = {
    calls: [],
    reset() {
      t.calls = [];
    },
    async fetch(input, init) {
      const res = await fetch(input, init);
      let sent;
      try {
        sent = typeof init?.body === 'string' ? JSON.parse(init.body) : undefined;
      } catch {
        sent = undefined;
      }
      const call = {
        url: String(input?.url ?? input),
        status: res.status,
        deployment: res.headers.get('x-keel-deployment'),
        attempts: res.headers.get('x-keel-attempts'),
        shouldRetry: res.headers.get('x-should-retry'),
        sent,
      };
      t.calls.push(call);
      if (!res.ok) {
        call.body = await res.clone().text();
      }
      return res;
    },
    deployments() {
      return t.calls.map((c) => c.deployment);
    },
  };
  t.fetch = t.fetch.bind(t);
  return t;
}

export class CheckError extends Error {}

export function expect(cond, message) {
  if (!cond) throw new CheckError(message);
}

/** Text made only of chaos's words, in its sentence shape, at most 48 words. */
export function checkLorem(text, what = 'text') {
  expect(typeof text === 'string' && text.length > 0, `${what} is empty: ${JSON.stringify(text)}`);
  const words = text.split(' ');
  expect(words.length <= 48, `${what} has ${words.length} words (a chaos answer has at most 48): ${text}`);
  for (const w of words) {
    const bare = w.replace(/\.$/, '').toLowerCase();
    expect(LOREM.has(bare), `${what} has ${JSON.stringify(w)}, not a chaos word: ${text}`);
  }
  expect(/^[A-Z]/.test(text) && text.endsWith('.'), `${what} is not chaos's sentence shape: ${text}`);
}

/** The client's own `max_tokens` of the `max-tokens-5` cases: the answer stops there. */
export const SMALL_MAX_TOKENS = 5;

/** Checks of a case's normalized result, by the shape it has. */
export function checkResult(r) {
  if (r.cut !== undefined) {
    // chaos sends one word per token; a limit the client set is not continued past.
    const words = r.cut.split(' ');
    expect(
      words.length <= SMALL_MAX_TOKENS && words.every((w) => LOREM.has(w.replace(/\.$/, '').toLowerCase())),
      `answer ${JSON.stringify(r.cut)} is not at most ${SMALL_MAX_TOKENS} chaos words`,
    );
    expect(r.finish === 'length', `finish reason ${r.finish}, expected length`);
    return;
  }
  if (r.text !== undefined) checkLorem(r.text, r.toolCall ? 'answer to the tool result' : 'text');
  if (r.finish !== undefined) expect(r.finish === 'stop', `finish reason ${r.finish}, expected a normal stop`);
  if (r.toolCall !== undefined) {
    expect(r.toolCall.name === TOOL_NAME, `called tool ${r.toolCall.name}, expected ${TOOL_NAME}`);
    const parsed = ToolArgs.safeParse(r.toolCall.args);
    expect(parsed.success, `tool arguments ${JSON.stringify(r.toolCall.args)} do not match the schema`);
  }
  if (r.json !== undefined) {
    const parsed = Weather.safeParse(r.json);
    expect(parsed.success, `structured output ${JSON.stringify(r.json)} does not match the schema`);
  }
  if (r.choices !== undefined) {
    expect(r.choices.length > 0, 'no choices');
    r.choices.forEach((c, i) => checkLorem(c, `choice ${i}`));
  }
}

/** `JSON.parse` that says what it could not parse. */
export function parseJson(text, what) {
  try {
    return JSON.parse(text);
  } catch {
    throw new CheckError(`${what} is not JSON: ${JSON.stringify(text).slice(0, 200)}`);
  }
}

function describeError(e, t) {
  const served = t.calls.map((c) => `${c.deployment ?? '-'}:${c.status}`).join(', ');
  const where = served ? ` [served by ${served}]` : ' [no HTTP exchange]';
  if (e instanceof CheckError) return e.message + where;
  const last = t.calls.findLast((c) => c.status >= 400);
  const http = last ? `HTTP ${last.status} ${String(last.body ?? '').slice(0, 240)}` : '';
  const msg = String(e?.message ?? e).split('\n')[0].slice(0, 240);
  return `${e?.constructor?.name ?? 'Error'}: ${msg}${http && !msg.includes(String(last.status)) ? ` (${http})` : ''}${where}`;
}

/**
 * What the oracle compares. After a tool round trip, chaos's answer hashes the
 * conversation's exact JSON, and Keel's typed path (taken when the client sets
 * `stream_options`, as the Vercel AI SDK does) writes the same conversation
 * differently (`"content": null` of an assistant tool call omitted, keys
 * reordered), so there the answer to the tool result is checked by shape only.
 */
function oracleView(r) {
  if (r.toolCall === undefined) return r;
  const { text, ...rest } = r;
  return rest;
}

/**
 * One row of the table: a client on a route, every case run through Keel and,
 * when all its calls were served by the client's own API, against chaos too.
 *
 * row = { name, keel, direct, sameKind: Set of deployment names, cases: {name: fn} }
 * where keel/direct are { api, tap } and each case fn(api) returns a normalized result.
 */
export async function runRow(row) {
  const results = {};
  for (const [name, fn] of Object.entries(row.cases)) {
    row.keel.tap.reset();
    let r;
    try {
      r = await fn(row.keel.api);
      checkResult(r);
    } catch (e) {
      results[name] = { ok: false, why: describeError(e, row.keel.tap) };
      continue;
    }
    const served = row.keel.tap.deployments();
    const note = served.join('+');
    if (row.direct && served.length > 0 && served.every((d) => row.sameKind.has(d))) {
      row.direct.tap.reset();
      try {
        const want = await fn(row.direct.api);
        const got = JSON.stringify(oracleView(r));
        const exp = JSON.stringify(oracleView(want));
        if (got !== exp) {
          results[name] = { ok: false, why: `differs from the provider's own answer: got ${got.slice(0, 300)}, provider said ${exp.slice(0, 300)}` };
          continue;
        }
        results[name] = { ok: true, how: `${note}, = provider` };
      } catch (e) {
        results[name] = { ok: false, why: `the oracle call straight to chaos failed: ${describeError(e, row.direct.tap)}` };
      }
    } else {
      results[name] = { ok: true, how: note };
    }
  }
  return results;
}

/** Print the client x case table (markdown) and each failure; return the failure count. */
export function report(rows, columns) {
  const head = `| client (route) | ${columns.join(' | ')} |`;
  const lines = [head, `|${' --- |'.repeat(columns.length + 1)}`];
  const failures = [];
  for (const { name, results } of rows) {
    const cells = columns.map((c) => {
      const r = results[c];
      if (!r) return '';
      if (!r.ok) failures.push(`${name} / ${c}: ${r.why}`);
      return r.ok ? 'pass' : '**FAIL**';
    });
    lines.push(`| ${name} | ${cells.join(' | ')} |`);
  }
  console.log(lines.join('\n'));
  console.log('');
  for (const { name, results } of rows) {
    for (const [c, r] of Object.entries(results)) {
      if (r.ok) console.log(`ok   ${name} / ${c} (served by ${r.how})`);
    }
  }
  for (const f of failures) console.log(`FAIL ${f}`);
  return failures.length;
}
