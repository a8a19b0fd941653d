// phi3 chat: the page `phi3 serve` serves at /. Hand-written, no dependencies, no build step.
//
// A client of this same server: GET /v1/models, POST /v1/chat/completions with stream: true (server-sent
// events read through fetch + ReadableStream). Conversations live in localStorage (this browser only),
// the API key in sessionStorage (this tab only). Model text is never parsed as HTML: every node is built
// with createElement / textContent, so an answer containing <script> shows as text.
"use strict";

(() => {
  const STORE_KEY = "phi3.chat.v1";
  const SETTINGS_KEY = "phi3.chat.settings.v1";
  const API_KEY_KEY = "phi3.chat.apiKey";
  const CUSTOM = "__custom__";
  const DEFAULT_SCHEMA = JSON.stringify(
    {
      type: "object",
      properties: { name: { type: "string" }, age: { type: "integer" } },
      required: ["name", "age"],
      additionalProperties: false,
    },
    null,
    2,
  );
  const DEFAULT_SETTINGS = {
    model: "",
    system: "",
    temperature: "0.7",
    topP: "0.95",
    maxTokens: "512",
    useSchema: false,
    schema: DEFAULT_SCHEMA,
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    sidebar: $("sidebar"),
    toggleSidebar: $("toggle-sidebar"),
    newChat: $("new-chat"),
    exportButton: $("export"),
    conversations: $("conversations"),
    model: $("model"),
    customModel: $("custom-model"),
    toggleSettings: $("toggle-settings"),
    settings: $("settings"),
    system: $("system"),
    temperature: $("temperature"),
    topP: $("top-p"),
    maxTokens: $("max-tokens"),
    useSchema: $("use-schema"),
    schema: $("schema"),
    keyState: $("key-state"),
    changeKey: $("change-key"),
    forgetKey: $("forget-key"),
    keyForm: $("key-form"),
    keyReason: $("key-reason"),
    apiKey: $("api-key"),
    error: $("error"),
    scroller: $("scroller"),
    messages: $("messages"),
    empty: $("empty"),
    composer: $("composer"),
    prompt: $("prompt"),
    send: $("send"),
    stop: $("stop"),
  };

  // ---- storage -------------------------------------------------------------------------------------

  function readJSON(storage, key, fallback) {
    try {
      const text = storage.getItem(key);
      return text ? JSON.parse(text) : fallback;
    } catch (_) {
      return fallback;
    }
  }

  function writeJSON(storage, key, value) {
    try {
      storage.setItem(key, JSON.stringify(value));
    } catch (exc) {
      showError(`Could not save in this browser's storage: ${exc.message}`);
    }
  }

  function newConversation() {
    const now = Date.now();
    return { id: `c${now.toString(36)}${Math.random().toString(36).slice(2, 7)}`, title: "", created: now, updated: now, messages: [] };
  }

  function loadState() {
    const stored = readJSON(localStorage, STORE_KEY, null);
    const conversations = stored && Array.isArray(stored.conversations) ? stored.conversations : [];
    const clean = conversations
      .filter((c) => c && typeof c === "object" && Array.isArray(c.messages))
      .map((c) => ({
        ...c,
        id: String(c.id || newConversation().id),
        title: String(c.title || ""),
        messages: c.messages
          .filter((m) => m && (m.role === "user" || m.role === "assistant"))
          .map((m) => ({ role: m.role, content: String(m.content ?? ""), meta: m.meta && typeof m.meta === "object" ? m.meta : undefined })),
      }));
    for (const c of clean) {
      for (const m of c.messages) {
        if (m.meta && m.meta.pending) {
          m.meta.pending = false; // the page was closed mid-answer
          m.meta.stopped = true;
        }
      }
    }
    if (!clean.length) clean.push(newConversation());
    const current = clean.some((c) => c.id === stored?.current) ? stored.current : clean[0].id;
    return { conversations: clean, current };
  }

  let state = loadState();
  let settings = { ...DEFAULT_SETTINGS, ...readJSON(localStorage, SETTINGS_KEY, {}) };
  let running = null; // {controller, conversation, message, node}
  const cards = new Map(); // model id -> /v1/models card

  function save() {
    writeJSON(localStorage, STORE_KEY, state);
  }

  function saveSettings() {
    writeJSON(localStorage, SETTINGS_KEY, settings);
  }

  function current() {
    return state.conversations.find((c) => c.id === state.current) || state.conversations[0];
  }

  function apiKey() {
    return sessionStorage.getItem(API_KEY_KEY) || "";
  }

  // ---- errors from the server ----------------------------------------------------------------------

  function showError(text) {
    el.error.textContent = text;
    el.error.hidden = !text;
  }

  async function responseError(response) {
    let message = "";
    try {
      const body = await response.json();
      message = body && body.error && body.error.message ? String(body.error.message) : JSON.stringify(body);
    } catch (_) {
      message = response.statusText || "no details";
    }
    return httpError(response.status, message, response.headers.get("retry-after"));
  }

  function httpError(status, message, retryAfter) {
    if (status === 429) {
      const retry = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again shortly.";
      return `The server is busy (HTTP 429): ${message.replace(/\.$/, "")}.${retry}`;
    }
    if (status === 401) return `API key needed (HTTP 401): ${message}`;
    return `Error from the server (HTTP ${status}): ${message}`;
  }

  // ---- API key ---------------------------------------------------------------------------------------

  function authHeaders() {
    const key = apiKey();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  function askForKey(reason) {
    el.keyReason.textContent = reason;
    el.keyForm.hidden = false;
    el.apiKey.value = "";
    el.apiKey.focus();
  }

  function updateKeyState() {
    const key = apiKey();
    el.keyState.textContent = key ? "An API key is set for this tab." : "No API key set.";
    el.forgetKey.hidden = !key;
  }

  // ---- models ----------------------------------------------------------------------------------------

  function cardLabel(card) {
    if (!card.loaded) return card.id;
    const where = [card.backend && card.engine ? `${card.backend}/${card.engine}` : card.backend, card.device, card.precision];
    return `${card.id} — ${where.filter(Boolean).join(" · ")}`;
  }

  function chosenModel() {
    return el.model.value === CUSTOM ? el.customModel.value.trim() : el.model.value;
  }

  async function loadModels() {
    let response;
    try {
      response = await fetch("/v1/models", { headers: authHeaders() });
    } catch (exc) {
      showError(`Cannot reach the phi3 server: ${exc.message}. Is phi3 serve still running?`);
      return false;
    }
    if (response.status === 401) {
      const hadKey = Boolean(apiKey());
      askForKey(
        hadKey
          ? "The server refused this API key. Enter the key phi3 serve was started with."
          : "This server needs an API key (it was started with --api-key or PHI3_API_KEY).",
      );
      showError(await responseError(response));
      return false;
    }
    if (!response.ok) {
      showError(await responseError(response));
      return false;
    }
    const body = await response.json();
    const list = Array.isArray(body.data) ? body.data : [];
    cards.clear();
    for (const card of list) cards.set(card.id, card);
    const wanted = chosenModel() || settings.model;
    el.model.replaceChildren();
    for (const card of list) {
      const option = document.createElement("option");
      option.value = card.id;
      option.textContent = cardLabel(card);
      el.model.append(option);
    }
    const custom = document.createElement("option");
    custom.value = CUSTOM;
    custom.textContent = "Other: MODEL@BACKEND:PRECISION:DEVICE…";
    el.model.append(custom);
    if (wanted && cards.has(wanted)) {
      el.model.value = wanted;
    } else if (wanted) {
      el.model.value = CUSTOM;
      el.customModel.value = wanted;
    } else {
      el.model.selectedIndex = 0;
    }
    el.customModel.hidden = el.model.value !== CUSTOM;
    el.keyForm.hidden = true;
    if (el.error.textContent.startsWith("API key needed") || el.error.textContent.startsWith("Cannot reach")) showError("");
    return true;
  }

  function findCard(model) {
    if (cards.has(model)) return cards.get(model);
    for (const card of cards.values()) if (card.loaded && card.id.startsWith(`${model}@`)) return card;
    return null;
  }

  // ---- Markdown, rendered as DOM nodes (never innerHTML) ----------------------------------------------

  const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([\s\S]+?)\*\*|__([\s\S]+?)__|\*([^*\s](?:[^*]*[^*\s])?)\*|\[([^\]\n]+)\]\(([^()\s]+)\)/g;

  function inline(parent, text) {
    let last = 0;
    for (const match of text.matchAll(INLINE)) {
      // matchAll scans a copy of the pattern: the recursive calls below cannot move this scan
      if (match.index > last) parent.append(document.createTextNode(text.slice(last, match.index)));
      last = match.index + match[0].length;
      if (match[2] !== undefined) {
        const code = document.createElement("code");
        code.textContent = match[2].replace(/^ (.*) $/, "$1");
        parent.append(code);
      } else if (match[3] !== undefined || match[4] !== undefined) {
        const strong = document.createElement("strong");
        inline(strong, match[3] !== undefined ? match[3] : match[4]);
        parent.append(strong);
      } else if (match[5] !== undefined) {
        const em = document.createElement("em");
        inline(em, match[5]);
        parent.append(em);
      } else {
        const href = match[7];
        if (/^(https?:|mailto:)/i.test(href)) {
          const a = document.createElement("a");
          a.href = href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          inline(a, match[6]);
          parent.append(a);
        } else {
          parent.append(document.createTextNode(match[0])); // javascript: and the like stay text
        }
      }
    }
    if (last < text.length) parent.append(document.createTextNode(text.slice(last)));
  }

  function paragraph(parent, lines) {
    const p = document.createElement("p");
    lines.forEach((line, index) => {
      if (index) p.append(document.createElement("br"));
      inline(p, line);
    });
    parent.append(p);
  }

  function codeBlock(parent, lines, language) {
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    if (language) code.dataset.language = language;
    code.textContent = lines.join("\n");
    pre.append(code);
    parent.append(pre);
    return code;
  }

  function markdown(parent, text) {
    const lines = text.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      const fence = line.match(/^\s*(```+|~~~+)\s*([\w+#.-]*)/);
      if (fence) {
        const body = [];
        i += 1;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        i += 1; // the closing fence (absent while an answer still streams)
        codeBlock(parent, body, fence[2]);
        continue;
      }
      if (!line.trim()) {
        i += 1;
        continue;
      }
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      if (heading) {
        const h = document.createElement(`h${Math.min(heading[1].length + 2, 6)}`);
        inline(h, heading[2]);
        parent.append(h);
        i += 1;
        continue;
      }
      const listItem = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/;
      if (listItem.test(line)) {
        const ordered = /^\s*\d/.test(line);
        const list = document.createElement(ordered ? "ol" : "ul");
        while (i < lines.length && listItem.test(lines[i]) && /^\s*\d/.test(lines[i]) === ordered) {
          const li = document.createElement("li");
          inline(li, lines[i].match(listItem)[2]);
          list.append(li);
          i += 1;
        }
        parent.append(list);
        continue;
      }
      if (/^\s*>/.test(line)) {
        const quoted = [];
        while (i < lines.length && /^\s*>/.test(lines[i])) quoted.push(lines[i++].replace(/^\s*>\s?/, ""));
        const blockquote = document.createElement("blockquote");
        markdown(blockquote, quoted.join("\n"));
        parent.append(blockquote);
        continue;
      }
      const para = [];
      while (
        i < lines.length &&
        lines[i].trim() &&
        !/^\s*(```|~~~)/.test(lines[i]) &&
        !/^#{1,6}\s/.test(lines[i]) &&
        !/^\s*>/.test(lines[i]) &&
        !(para.length && listItem.test(lines[i]))
      ) {
        para.push(lines[i++]);
      }
      paragraph(parent, para);
    }
  }

  function renderContent(container, message) {
    container.replaceChildren();
    const meta = message.meta || {};
    if (message.role === "assistant" && meta.json && !meta.pending) {
      try {
        const value = JSON.parse(message.content);
        codeBlock(container, [JSON.stringify(value, null, 2)], "json").classList.add("json");
        return;
      } catch (_) {
        /* not (yet) valid JSON: shown as it came */
      }
    }
    if (message.role === "assistant" && meta.json) {
      codeBlock(container, [message.content], "json");
      return;
    }
    if (message.role === "user") {
      container.classList.add("plain");
      container.textContent = message.content; // what the user typed, exactly
      return;
    }
    markdown(container, message.content);
  }

  // ---- rendering the conversation ----------------------------------------------------------------------

  function formatMs(ms) {
    return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms)} ms`;
  }

  function metaParts(meta) {
    const parts = [];
    if (meta.usage) parts.push(`${meta.usage.completion_tokens} tokens`);
    const ttft = meta.timings ? meta.timings.prompt_ms : meta.clientTtftMs;
    if (typeof ttft === "number") parts.push(`TTFT ${formatMs(ttft)}`);
    if (meta.timings && typeof meta.timings.predicted_per_second === "number") {
      parts.push(`${meta.timings.predicted_per_second.toFixed(1)} tok/s`);
    }
    const where = [meta.backend && meta.engine ? `${meta.backend}/${meta.engine}` : meta.backend, meta.device, meta.precision];
    if (where.some(Boolean)) parts.push(where.filter(Boolean).join(" · "));
    if (meta.model) parts.push(meta.model);
    if (meta.finish === "length") parts.push("cut at max tokens");
    if (meta.stopped) parts.push("stopped");
    return parts;
  }

  function messageNode(conversation, message, index) {
    const li = document.createElement("li");
    li.className = `message ${message.role}`;
    li.dataset.index = String(index);
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = message.role === "user" ? "You" : "phi3";
    const content = document.createElement("div");
    content.className = "content";
    li.append(who, content);
    renderContent(content, message);
    if (message.role === "assistant") {
      const meta = message.meta || {};
      if (meta.pending && !message.content) {
        const waiting = document.createElement("span");
        waiting.className = "waiting";
        waiting.textContent = "waiting for the model (it loads on first use)…";
        content.replaceWith(waiting); // the content box appears with the first piece of the answer
      }
      if (meta.error) {
        const error = document.createElement("p");
        error.className = "message-error";
        error.setAttribute("role", "alert");
        error.textContent = meta.error;
        li.append(error);
      }
      const footer = document.createElement("div");
      footer.className = "meta";
      const info = document.createElement("span");
      info.className = "stats";
      info.textContent = metaParts(meta).join(" · ");
      footer.append(info);
      const isLast = index === conversation.messages.length - 1;
      if (isLast && !running) {
        const regenerate = document.createElement("button");
        regenerate.type = "button";
        regenerate.className = "small regenerate";
        regenerate.textContent = "Regenerate";
        regenerate.addEventListener("click", () => regenerateLast());
        footer.append(regenerate);
      }
      if (message.content && !meta.pending) {
        const copy = document.createElement("button");
        copy.type = "button";
        copy.className = "small";
        copy.textContent = "Copy";
        copy.addEventListener("click", () => {
          if (navigator.clipboard) navigator.clipboard.writeText(message.content).catch(() => {});
        });
        footer.append(copy);
      }
      li.append(footer);
      li.setAttribute("aria-busy", meta.pending ? "true" : "false");
    }
    return li;
  }

  function renderMessages() {
    const conversation = current();
    const nodes = conversation.messages.map((m, i) => messageNode(conversation, m, i));
    el.messages.replaceChildren(...nodes);
    el.empty.hidden = nodes.length > 0;
  }

  function renderConversations() {
    const items = [...state.conversations]
      .sort((a, b) => (b.updated || 0) - (a.updated || 0))
      .map((c) => {
        const li = document.createElement("li");
        if (c.id === state.current) li.className = "active";
        const open = document.createElement("button");
        open.type = "button";
        open.className = "open";
        open.textContent = c.title || "New chat";
        open.title = c.title || "New chat";
        if (c.id === state.current) open.setAttribute("aria-current", "true");
        open.addEventListener("click", () => switchTo(c.id));
        const remove = document.createElement("button");
        remove.type = "button";
        remove.className = "small remove";
        remove.textContent = "✕";
        remove.setAttribute("aria-label", `Delete conversation: ${c.title || "New chat"}`);
        remove.addEventListener("click", () => deleteConversation(c.id));
        li.append(open, remove);
        return li;
      });
    el.conversations.replaceChildren(...items);
  }

  function renderAll() {
    renderMessages();
    renderConversations();
    updateComposer();
  }

  function updateComposer() {
    el.send.hidden = Boolean(running);
    el.stop.hidden = !running;
    el.send.disabled = Boolean(running);
  }

  function scrollToEnd() {
    el.scroller.scrollTop = el.scroller.scrollHeight;
  }

  let frame = 0;
  function renderRunningSoon() {
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      renderRunning();
    });
  }

  function renderRunning() {
    if (!running || running.conversation !== current()) return;
    const index = running.conversation.messages.indexOf(running.message);
    const old = el.messages.children[index];
    const nearEnd = el.scroller.scrollHeight - el.scroller.scrollTop - el.scroller.clientHeight < 80;
    const fresh = messageNode(running.conversation, running.message, index);
    if (old) old.replaceWith(fresh);
    if (nearEnd) scrollToEnd();
  }

  // ---- generating ------------------------------------------------------------------------------------

  function readSettings() {
    settings = {
      model: chosenModel(),
      system: el.system.value,
      temperature: el.temperature.value,
      topP: el.topP.value,
      maxTokens: el.maxTokens.value,
      useSchema: el.useSchema.checked,
      schema: el.schema.value,
    };
    saveSettings();
    return settings;
  }

  function requestBody(conversation, s) {
    const messages = [];
    if (s.system.trim()) messages.push({ role: "system", content: s.system });
    for (const m of conversation.messages) {
      if (m.role === "assistant" && (m.meta?.pending || (!m.content && m.meta?.error))) continue;
      messages.push({ role: m.role, content: m.content });
    }
    const body = { model: s.model, messages, stream: true, stream_options: { include_usage: true } };
    const number = (text) => (String(text).trim() === "" ? null : Number(text));
    const temperature = number(s.temperature);
    const topP = number(s.topP);
    const maxTokens = number(s.maxTokens);
    if (temperature !== null) body.temperature = temperature;
    if (topP !== null) body.top_p = topP;
    if (maxTokens !== null) body.max_tokens = Math.round(maxTokens);
    if (s.useSchema) {
      const text = s.schema.trim();
      if (!text) {
        body.response_format = { type: "json_object" };
      } else {
        let schema;
        try {
          schema = JSON.parse(text);
        } catch (exc) {
          throw new Error(`The JSON Schema box does not hold valid JSON: ${exc.message}. Fix it or untick the box.`);
        }
        body.response_format = { type: "json_schema", json_schema: { name: "answer", schema, strict: true } };
      }
    }
    return body;
  }

  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end = buffer.indexOf("\n\n");
      while (end >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block
          .split("\n")
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data && onEvent(data) === false) {
          reader.cancel().catch(() => {});
          return;
        }
        end = buffer.indexOf("\n\n");
      }
    }
  }

  async function generate(conversation) {
    showError("");
    let s;
    let body;
    try {
      s = readSettings();
      if (!s.model) throw new Error("Pick a model first (the Model menu), or type one under Other.");
      body = requestBody(conversation, s);
    } catch (exc) {
      showError(exc.message);
      return;
    }
    const message = { role: "assistant", content: "", meta: { model: s.model, pending: true, json: Boolean(s.useSchema) } };
    conversation.messages.push(message);
    conversation.updated = Date.now();
    const controller = new AbortController();
    running = { controller, conversation, message };
    save();
    renderAll();
    scrollToEnd();
    const started = performance.now();
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        message.meta.error = await responseError(response);
        if (response.status === 401) askForKey("The server asks for an API key. Enter it, then send again.");
      } else {
        await readEvents(response, (data) => {
          if (data === "[DONE]") return false;
          let event;
          try {
            event = JSON.parse(data);
          } catch (_) {
            return true;
          }
          if (event.error) {
            const busy = event.error.type === "rate_limit_error";
            message.meta.error = busy ? httpError(429, event.error.message, null) : `Error from the server: ${event.error.message}`;
            return false;
          }
          const choice = Array.isArray(event.choices) ? event.choices[0] : null;
          const piece = choice && choice.delta ? choice.delta.content : null;
          if (piece) {
            if (message.meta.clientTtftMs === undefined) message.meta.clientTtftMs = performance.now() - started;
            message.content += piece;
            renderRunningSoon();
          }
          if (choice && choice.finish_reason) message.meta.finish = choice.finish_reason;
          if (event.usage) message.meta.usage = event.usage;
          if (event.timings) message.meta.timings = event.timings;
          return true;
        });
      }
    } catch (exc) {
      if (controller.signal.aborted) {
        message.meta.stopped = true;
      } else {
        message.meta.error = `The connection to the server failed: ${exc.message}`;
      }
    }
    message.meta.pending = false;
    const card = findCard(s.model);
    if (card && card.loaded) Object.assign(message.meta, pickCard(card));
    running = null;
    if (frame) cancelAnimationFrame(frame);
    frame = 0;
    if (!conversation.title) {
      const first = conversation.messages.find((m) => m.role === "user");
      conversation.title = first ? first.content.slice(0, 60) : "";
    }
    conversation.updated = Date.now();
    save();
    renderAll();
    scrollToEnd();
    el.prompt.focus();
    // the model is loaded now: its card has the backend, engine, device and precision really used
    if (await loadModels()) {
      const loaded = findCard(s.model);
      if (loaded && loaded.loaded) {
        Object.assign(message.meta, pickCard(loaded));
        save();
        if (conversation === current()) renderMessages();
      }
    }
  }

  function pickCard(card) {
    return { backend: card.backend, engine: card.engine, device: card.device, precision: card.precision };
  }

  function stop() {
    if (running) running.controller.abort();
  }

  function sendPrompt() {
    if (running) return;
    const text = el.prompt.value;
    if (!text.trim()) return;
    const conversation = current();
    conversation.messages.push({ role: "user", content: text });
    if (!conversation.title) conversation.title = text.slice(0, 60);
    el.prompt.value = "";
    autosize();
    generate(conversation);
  }

  function regenerateLast() {
    if (running) return;
    const conversation = current();
    const last = conversation.messages[conversation.messages.length - 1];
    if (!last) return;
    if (last.role === "assistant") conversation.messages.pop();
    if (!conversation.messages.length) return;
    generate(conversation);
  }

  // ---- conversations -------------------------------------------------------------------------------

  function startNewChat() {
    if (running) stop();
    const empty = state.conversations.find((c) => !c.messages.length);
    const conversation = empty || newConversation();
    if (!empty) state.conversations.push(conversation);
    state.current = conversation.id;
    save();
    renderAll();
    closeSidebar();
    el.prompt.focus();
  }

  function switchTo(id) {
    if (running && running.conversation.id !== id) stop();
    state.current = id;
    save();
    renderAll();
    closeSidebar();
  }

  function deleteConversation(id) {
    if (running && running.conversation.id === id) stop();
    state.conversations = state.conversations.filter((c) => c.id !== id);
    if (!state.conversations.length) state.conversations.push(newConversation());
    if (!state.conversations.some((c) => c.id === state.current)) state.current = state.conversations[0].id;
    save();
    renderAll();
  }

  function exportJSON() {
    const blob = new Blob([JSON.stringify({ exported: new Date().toISOString(), ...state }, null, 2)], { type: "application/json" });
    const url = URL.createObjectURL(blob);
    const a = document.createElement("a");
    a.href = url;
    a.download = `phi3-chats-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-")}.json`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function closeSidebar() {
    el.sidebar.classList.remove("open");
    el.toggleSidebar.setAttribute("aria-expanded", "false");
  }

  // ---- wiring ----------------------------------------------------------------------------------------

  function autosize() {
    el.prompt.style.height = "auto";
    el.prompt.style.height = `${Math.min(el.prompt.scrollHeight, 200)}px`;
  }

  function applySettings() {
    el.system.value = settings.system;
    el.temperature.value = settings.temperature;
    el.topP.value = settings.topP;
    el.maxTokens.value = settings.maxTokens;
    el.useSchema.checked = Boolean(settings.useSchema);
    el.schema.value = settings.schema || DEFAULT_SCHEMA;
    el.schema.disabled = !el.useSchema.checked;
  }

  el.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendPrompt();
  });
  el.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendPrompt();
    }
  });
  el.prompt.addEventListener("input", autosize);
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (running) {
      event.preventDefault();
      stop();
    } else if (el.sidebar.classList.contains("open")) {
      closeSidebar();
      el.toggleSidebar.focus();
    }
  });
  el.stop.addEventListener("click", stop);
  el.newChat.addEventListener("click", startNewChat);
  el.exportButton.addEventListener("click", exportJSON);
  el.toggleSidebar.addEventListener("click", () => {
    const open = el.sidebar.classList.toggle("open");
    el.toggleSidebar.setAttribute("aria-expanded", String(open));
  });
  el.toggleSettings.addEventListener("click", () => {
    el.settings.hidden = !el.settings.hidden;
    el.toggleSettings.setAttribute("aria-expanded", String(!el.settings.hidden));
  });
  el.model.addEventListener("change", () => {
    el.customModel.hidden = el.model.value !== CUSTOM;
    if (!el.customModel.hidden) el.customModel.focus();
    readSettings();
  });
  el.customModel.addEventListener("change", readSettings);
  for (const input of [el.system, el.temperature, el.topP, el.maxTokens, el.schema]) input.addEventListener("change", readSettings);
  el.useSchema.addEventListener("change", () => {
    el.schema.disabled = !el.useSchema.checked;
    readSettings();
  });
  el.keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = el.apiKey.value.trim();
    if (!key) return;
    sessionStorage.setItem(API_KEY_KEY, key);
    el.apiKey.value = "";
    updateKeyState();
    if (await loadModels()) el.prompt.focus();
  });
  el.changeKey.addEventListener("click", () => askForKey("Enter the API key phi3 serve was started with."));
  el.forgetKey.addEventListener("click", () => {
    sessionStorage.removeItem(API_KEY_KEY);
    updateKeyState();
  });
  window.addEventListener("storage", (event) => {
    if (event.key === STORE_KEY && !running) {
      state = loadState();
      renderAll();
    }
  });

  applySettings();
  updateKeyState();
  renderAll();
  scrollToEnd();
  loadModels();
  el.prompt.focus();
})();
