// Real JavaScript clients against a running gateway, driven by tests/test_clients_node.py.
//
//   node clients.mjs '<json>'   with {baseURL, apiKey, png, cases: [{id, kind, model, ...}]}
//
// Prints one JSON array: per case {id, ok, ...what the client returned} or {id, ok: false, error}.
// Each case catches its own error, so one failing client does not hide the others.
import OpenAI, { toFile } from "openai";
import { generateImage } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";

const spec = JSON.parse(process.argv[2]);
const { baseURL, apiKey } = spec;
const png = Buffer.from(spec.png, "base64");
const sdk = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

// What an image in an Images API answer looked like to the client.
function item(d) {
  return { url: d.url ?? null, b64_json: d.b64_json ?? null, revised_prompt: d.revised_prompt ?? null };
}

// An AI SDK GeneratedFile: its bytes (base64) and media type.
function file(f) {
  return { mediaType: f.mediaType, base64: Buffer.from(f.uint8Array).toString("base64") };
}

function aisdkModel(c) {
  if (c.kind.startsWith("aisdk.openai")) {
    return createOpenAI({ baseURL, apiKey }).image(c.model);
  }
  return createOpenAICompatible({ name: "gateway", baseURL, apiKey }).imageModel(c.model);
}

const kinds = {
  // The openai Node SDK: generations as the caller writes them (no response_format unless given).
  async "openai.generate"(c) {
    const res = await sdk.images.generate({ model: c.model, prompt: c.prompt, ...(c.params ?? {}) });
    return { data: res.data.map(item) };
  },
  async "openai.edit"(c) {
    const images = await Promise.all(
      Array.from({ length: c.images ?? 1 }, (_, i) => toFile(png, `in${i}.png`, { type: "image/png" })),
    );
    const params = { model: c.model, prompt: c.prompt, image: images.length === 1 ? images[0] : images };
    if (c.mask) params.mask = await toFile(png, "mask.png", { type: "image/png" });
    const res = await sdk.images.edit({ ...params, ...(c.params ?? {}) });
    return { data: res.data.map(item) };
  },
  async "openai.stream"(c) {
    const stream = await sdk.images.generate({
      model: c.model, prompt: c.prompt, stream: true, partial_images: c.partial_images ?? 2,
    });
    const events = [];
    for await (const ev of stream) {
      events.push({ type: ev.type, b64_len: (ev.b64_json ?? "").length });
    }
    return { events };
  },
  async "openai.chat"(c) {
    const body = { model: c.model, messages: c.messages, ...(c.params ?? {}) };
    if (c.stream) {
      const stream = await sdk.chat.completions.create({ ...body, stream: true });
      let content = "";
      const images = [];
      let longest = 0;
      for await (const chunk of stream) {
        const delta = chunk.choices[0]?.delta ?? {};
        content += delta.content ?? "";
        for (const img of delta.images ?? []) images.push(img);
        longest = Math.max(longest, JSON.stringify(chunk).length);
      }
      return { content, images, longest_chunk: longest };
    }
    const res = await sdk.chat.completions.create(body);
    const msg = res.choices[0].message;
    return { content: msg.content, images: msg.images ?? [] };
  },
  // The Vercel AI SDK: generateImage through @ai-sdk/openai (the gateway as its baseURL) or
  // @ai-sdk/openai-compatible; n is split by maxImagesPerCall into parallel calls by the SDK.
  async "aisdk.openai"(c) {
    return aisdkGenerate(c);
  },
  async "aisdk.compatible"(c) {
    return aisdkGenerate(c);
  },
  async "aisdk.openai.edit"(c) {
    return aisdkEdit(c);
  },
  async "aisdk.compatible.edit"(c) {
    return aisdkEdit(c);
  },
};

async function aisdkGenerate(c) {
  const res = await generateImage({
    model: aisdkModel(c), prompt: c.prompt, n: c.n ?? 1, size: c.size, maxRetries: 0,
    ...(c.maxImagesPerCall ? { maxImagesPerCall: c.maxImagesPerCall } : {}),
  });
  return { images: res.images.map(file), responses: res.responses.length, warnings: res.warnings };
}

async function aisdkEdit(c) {
  const prompt = { text: c.prompt, images: Array.from({ length: c.images ?? 1 }, () => new Uint8Array(png)) };
  if (c.mask) prompt.mask = new Uint8Array(png);
  const res = await generateImage({ model: aisdkModel(c), prompt, n: c.n ?? 1, maxRetries: 0 });
  return { images: res.images.map(file), responses: res.responses.length };
}

const out = [];
for (const c of spec.cases) {
  try {
    out.push({ id: c.id, ok: true, ...(await kinds[c.kind](c)) });
  } catch (e) {
    out.push({ id: c.id, ok: false, error: String(e?.message ?? e), status: e?.status ?? e?.statusCode ?? null });
  }
}
process.stdout.write(JSON.stringify(out));
