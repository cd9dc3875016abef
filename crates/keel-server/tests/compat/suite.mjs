// The Node half of the client-compatibility suite (driven by tests/compat.rs):
//
//   node suite.mjs <keel-url> <chaos-url>
//
// Keel's routes (the `model` a client asks for), as tests/compat.rs configures them:
//   gpt-4o-mini               flaky OpenAI upstream, then a healthy Anthropic one
//   claude-sonnet-4-6         flaky Anthropic upstream, then a healthy OpenAI one
//   gpt-4o-mini-on-claude     Anthropic only (an OpenAI client on an Anthropic-backed route)
//   claude-sonnet-4-6-on-gpt  OpenAI only (the reverse)
//   dead                      an upstream that always fails
//   refuses                   an upstream that refuses every request as invalid (400)
//   claude-strict             an Anthropic upstream that refuses temperature with top_p
// Prints a client x case table (markdown), then each result; exits 1 on any failure.

import { anthropicApi, cases as anthropicCases, probes as anthropicProbes } from './anthropic_node.mjs';
import { report, runRow } from './lib.mjs';
import { openaiApi, cases as openaiCases, probes as openaiProbes } from './openai_node.mjs';
import {
  cases as vercelCases,
  probes as vercelProbes,
  vercelAnthropicApi,
  vercelOpenaiApi,
} from './vercel.mjs';

const [keel, chaos] = process.argv.slice(2);
if (!keel || !chaos) {
  console.error('usage: node suite.mjs <keel-url> <chaos-url>');
  process.exit(2);
}

const OA_HOME = 'gpt-4o-mini';
const AN_HOME = 'claude-sonnet-4-6';
const OA_ON_AN = 'gpt-4o-mini-on-claude';
const AN_ON_OA = 'claude-sonnet-4-6-on-gpt';
// The models Keel's deployments ask the upstreams for (the oracle asks the same).
const OA_MODEL = 'gpt-4o-mini';
const AN_MODEL = 'claude-sonnet-4-5';
const OPENAI_DEPLOYMENTS = new Set(['flaky-oa', 'oa']);
const ANTHROPIC_DEPLOYMENTS = new Set(['flaky-an', 'an']);

const rows = [
  {
    name: `openai-node (${OA_HOME}: flaky OpenAI, then Anthropic)`,
    keel: openaiApi(`${keel}/v1`, OA_HOME),
    direct: openaiApi(`${chaos}/oa/v1`, OA_MODEL),
    sameKind: OPENAI_DEPLOYMENTS,
    cases: openaiCases,
  },
  {
    name: `openai-node (${OA_ON_AN}: Anthropic-backed)`,
    keel: openaiApi(`${keel}/v1`, OA_ON_AN),
    cases: openaiCases,
  },
  {
    name: `anthropic-node (${AN_HOME}: flaky Anthropic, then OpenAI)`,
    keel: anthropicApi(keel, AN_HOME),
    direct: anthropicApi(`${chaos}/an`, AN_MODEL),
    sameKind: ANTHROPIC_DEPLOYMENTS,
    cases: anthropicCases,
  },
  {
    name: `anthropic-node (${AN_ON_OA}: OpenAI-backed)`,
    keel: anthropicApi(keel, AN_ON_OA),
    cases: anthropicCases,
  },
  {
    name: `vercel @ai-sdk/openai (${OA_HOME}: flaky OpenAI, then Anthropic)`,
    keel: vercelOpenaiApi(`${keel}/v1`, OA_HOME),
    direct: vercelOpenaiApi(`${chaos}/oa/v1`, OA_MODEL),
    sameKind: OPENAI_DEPLOYMENTS,
    cases: vercelCases,
  },
  {
    name: `vercel @ai-sdk/openai (${OA_ON_AN}: Anthropic-backed)`,
    keel: vercelOpenaiApi(`${keel}/v1`, OA_ON_AN),
    cases: vercelCases,
  },
  {
    name: `vercel @ai-sdk/anthropic (${AN_HOME}: flaky Anthropic, then OpenAI)`,
    keel: vercelAnthropicApi(`${keel}/v1`, AN_HOME),
    direct: vercelAnthropicApi(`${chaos}/an/v1`, AN_MODEL),
    sameKind: ANTHROPIC_DEPLOYMENTS,
    cases: vercelCases,
  },
  {
    name: `vercel @ai-sdk/anthropic (${AN_ON_OA}: OpenAI-backed)`,
    keel: vercelAnthropicApi(`${keel}/v1`, AN_ON_OA),
    cases: vercelCases,
  },
];

const probeRows = [
  { name: `openai-node n=2 (${AN_HOME})`, keel: openaiApi(`${keel}/v1`, AN_HOME), cases: { 'n=2': openaiProbes['n=2'] } },
  {
    name: 'openai-node (claude-strict: an Anthropic upstream that refuses temperature with top_p)',
    keel: openaiApi(`${keel}/v1`, 'claude-strict'),
    cases: { 'temperature+top_p': openaiProbes['temperature+top_p'] },
  },
  {
    name: 'openai-node (dead: every attempt fails with a 500)',
    keel: openaiApi(`${keel}/v1`, 'dead'),
    cases: { 'x-should-retry': openaiProbes['x-should-retry'] },
  },
  {
    name: 'openai-node (refuses: every attempt is refused with a 400)',
    keel: openaiApi(`${keel}/v1`, 'refuses'),
    cases: { 'x-should-retry': openaiProbes['x-should-retry'] },
  },
  {
    name: `openai-node responses.create (${OA_HOME})`,
    keel: openaiApi(`${keel}/v1`, OA_HOME),
    cases: { 'responses-api': openaiProbes['responses-api'] },
  },
  {
    name: `anthropic-node messages.countTokens, messages.batches.list (${AN_HOME})`,
    keel: anthropicApi(keel, AN_HOME),
    cases: {
      'count-tokens': anthropicProbes['count-tokens'],
      'unserved-path': anthropicProbes['unserved-path'],
    },
  },
  {
    name: `vercel openai(model), the Responses API (${OA_HOME})`,
    keel: vercelOpenaiApi(`${keel}/v1`, OA_HOME),
    cases: { 'responses-api': vercelProbes['responses-api'] },
  },
];

const done = [];
for (const row of rows) done.push({ name: row.name, results: await runRow(row) });
const probesDone = [];
for (const row of probeRows) probesDone.push({ name: row.name, results: await runRow(row) });

const columns = Object.keys(openaiCases);
let failed = report(done, columns);
console.log('');
const probeColumns = ['n=2', 'temperature+top_p', 'x-should-retry', 'responses-api', 'count-tokens', 'unserved-path'];
failed += report(probesDone, probeColumns);
const total = [...done, ...probesDone].reduce((n, r) => n + Object.keys(r.results).length, 0);
console.log(`\nnode compat suite: ${total} cases, ${failed} failed`);
process.exit(failed > 0 ? 1 : 0);
