// The official OpenAI client (npm "openai", pinned in package-lock.json) against moepp serve:
// 16 streaming completions and 16 streaming chat completions at once, each checked against
// the text `moepp generate --temp 0` gives for the same prompt (expected.json, written by
// run.sh), plus one non-streaming call of each kind and the model list.
// Usage: node openai_client_test.mjs BASE_URL API_KEY expected.json
import fs from "node:fs";
import OpenAI from "openai";

const [baseURL, apiKey, expectedPath] = process.argv.slice(2);
const expected = JSON.parse(fs.readFileSync(expectedPath, "utf8"));
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 120000 });
let passed = 0, failed = 0;
const check = (ok, what) => { if (ok) passed++; else { failed++; console.log("FAIL:", what); } };

const models = await client.models.list();
check(models.data.length === 1 && models.data[0].id === expected.model, `models.list names ${expected.model}`);

async function streamCompletion(c) {
  const stream = await client.completions.create({ model: expected.model, prompt: c.prompt, max_tokens: c.max_tokens,
                                                   temperature: 0, stream: true });
  let text = "", finish = null;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) { text += choice.text; if (choice.finish_reason) finish = choice.finish_reason; }
  }
  return { text, finish };
}

async function streamChat(c) {
  const stream = await client.chat.completions.create({ model: expected.model, messages: [{ role: "user", content: c.user }],
                                                        max_tokens: c.max_tokens, temperature: 0, stream: true });
  let text = "", finish = null, role = null;
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      if (choice.delta.role) role = choice.delta.role;
      text += choice.delta.content ?? "";
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return { text, finish, role };
}

const [completions, chats] = await Promise.all([
  Promise.all(expected.completions.map(streamCompletion)),
  Promise.all(expected.chats.map(streamChat)),
]);
completions.forEach((r, i) => {
  const want = expected.completions[i].continuation;
  check(r.text === want, `streamed completion ${i}: ${JSON.stringify(r.text)} vs ${JSON.stringify(want)}`);
  check(r.finish === "stop" || r.finish === "length", `completion ${i} finish_reason ${r.finish}`);
});
chats.forEach((r, i) => {
  const want = expected.chats[i].continuation;
  check(r.text === want, `streamed chat ${i}: ${JSON.stringify(r.text)} vs ${JSON.stringify(want)}`);
  check(r.role === "assistant", `chat ${i} role ${r.role}`);
});

const whole = await client.completions.create({ model: expected.model, prompt: expected.completions[0].prompt,
                                                max_tokens: expected.completions[0].max_tokens, temperature: 0 });
check(whole.choices[0].text === expected.completions[0].continuation, "a non-streaming completion");
check(whole.usage.total_tokens === whole.usage.prompt_tokens + whole.usage.completion_tokens, "usage adds up");
const chat = await client.chat.completions.create({ model: expected.model, max_tokens: expected.chats[0].max_tokens,
                                                    messages: [{ role: "user", content: expected.chats[0].user }],
                                                    temperature: 0 });
check(chat.choices[0].message.content === expected.chats[0].continuation, "a non-streaming chat completion");
// stream_options.include_usage, as the client passes it: the usage arrives in the last chunk.
const withUsage = await client.chat.completions.create({ model: expected.model, max_tokens: expected.chats[0].max_tokens,
                                                         messages: [{ role: "user", content: expected.chats[0].user }],
                                                         temperature: 0, stream: true,
                                                         stream_options: { include_usage: true } });
let usage = null, usageText = "";
for await (const chunk of withUsage) {
  if (chunk.usage) usage = chunk.usage;
  for (const choice of chunk.choices) usageText += choice.delta.content ?? "";
}
check(usageText === expected.chats[0].continuation, "a streamed chat with include_usage");
check(usage !== null && usage.completion_tokens > 0 && usage.total_tokens === usage.prompt_tokens + usage.completion_tokens,
      `include_usage: the stream's usage ${JSON.stringify(usage)}`);
try {
  await client.completions.create({ model: "no-such-model", prompt: "x" });
  check(false, "an unknown model is refused");
} catch (e) {
  check(e.status === 404 && e.error?.code === "model_not_found", `an unknown model is a 404 the client reads: ${e.status}`);
}
console.log(`openai client checks: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
