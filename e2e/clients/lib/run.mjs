// Shared by the client scripts: the command line, HTTP/2, a tap on fetch
// that keeps the raw bytes of every response body, and the one JSON line a
// script prints.
//
// Every script runs one client library the way an application does, against
// a base URL (--base, or SSE_BASE), and prints one line:
//
//   {"client", "library", "version", "tokens": [...], "tokenAt": [ms...],
//    "text", "final", "done", "errors": [{name, message}], "comments",
//    "requests", "responses": [{method, url, status, headers, raw, ended}]}
//
// tokens are the text pieces the application got, in order; text is their
// concatenation; final is the text the library assembled itself, where it
// does; done is true when the library reported a complete stream; comments
// counts the comment lines the library itself reported (where it can);
// requests counts the fetch calls the library made; raw is each response
// body exactly as the library read it, heartbeats included.
//
// With --h2, fetch goes through undici's Agent with allowH2 (Node's fetch
// speaks HTTP/1.1 only by default), installed with setGlobalDispatcher, and
// accepts the test server's self-signed certificate.

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

function parseOptions() {
	const { values } = parseArgs({
		options: {
			base: { type: 'string', default: process.env.SSE_BASE ?? '' },
			h2: { type: 'boolean', default: process.env.SSE_H2 === '1' },
			timeout: { type: 'string', default: process.env.SSE_CLIENT_TIMEOUT ?? '60000' },
		},
	});
	if (!values.base) {
		throw new Error('usage: node <script> --base <url> [--h2]  (or SSE_BASE=<url>)');
	}
	return { base: values.base.replace(/\/$/, ''), h2: values.h2, timeout: Number(values.timeout) };
}

function versionOf(pkg) {
	const url = new URL(`../node_modules/${pkg}/package.json`, import.meta.url);
	return JSON.parse(readFileSync(url, 'utf8')).version;
}

// installTap replaces globalThis.fetch with a wrapper that counts calls and
// copies every response body as the caller reads it. The Response object is
// the one fetch returned (url, headers, status unchanged); only its body is
// replaced by a pass-through stream.
function installTap() {
	const realFetch = globalThis.fetch;
	const tap = { requests: 0, responses: [] };
	globalThis.fetch = async function tappedFetch(input, init) {
		tap.requests++;
		const rec = {
			method: init?.method ?? (input instanceof Request ? input.method : 'GET'),
			url: String(input instanceof Request ? input.url : input),
			status: 0,
			headers: {},
			raw: '',
			ended: false,
		};
		tap.responses.push(rec);
		const res = await realFetch(input, init);
		rec.status = res.status;
		for (const [k, v] of res.headers) {
			rec.headers[k] = v;
		}
		if (res.body) {
			const decoder = new TextDecoder();
			const copy = res.body.pipeThrough(
				new TransformStream({
					transform(chunk, controller) {
						rec.raw += decoder.decode(chunk, { stream: true });
						controller.enqueue(chunk);
					},
					flush() {
						rec.raw += decoder.decode();
						rec.ended = true;
					},
				}),
			);
			Object.defineProperty(res, 'body', { value: copy, configurable: true });
		}
		return res;
	};
	return tap;
}

// main runs body(app) and prints the record. app.base is the base URL;
// app.token, app.final, app.comment, app.error and app.done record what the
// application saw.
export async function main(client, library, body) {
	const opts = parseOptions();
	if (opts.h2) {
		const { Agent, setGlobalDispatcher } = await import('undici');
		setGlobalDispatcher(new Agent({ allowH2: true, connect: { rejectUnauthorized: false } }));
	}
	const tap = installTap();
	const start = Date.now();
	const rec = {
		client,
		library,
		version: versionOf(library),
		h2: opts.h2,
		tokens: [],
		tokenAt: [],
		text: '',
		final: null,
		done: false,
		errors: [],
		comments: 0,
		requests: 0,
		responses: [],
		elapsedMs: 0,
	};
	const seen = new Set();
	const app = {
		base: opts.base,
		token(s) {
			rec.tokens.push(s);
			rec.tokenAt.push(Date.now());
			rec.text += s;
		},
		final(s) {
			rec.final = s;
		},
		comment() {
			rec.comments++;
		},
		error(err) {
			if (err !== null && typeof err === 'object') {
				if (seen.has(err)) return;
				seen.add(err);
			}
			rec.errors.push({
				name: err?.name ?? typeof err,
				class: err?.constructor?.name,
				message: String(err?.message ?? err),
				cause: err?.cause ? String(err.cause?.message ?? err.cause) : undefined,
				// what the SDKs' API errors carry
				status: err?.status,
				code: err?.code ?? undefined,
				type: err?.type ?? undefined,
			});
		},
		done() {
			rec.done = true;
		},
	};
	let printed = false;
	const finish = () => {
		if (printed) return;
		printed = true;
		rec.requests = tap.requests;
		rec.responses = tap.responses;
		rec.elapsedMs = Date.now() - start;
		// exit at once: a library may leave a request or a retry timer behind
		process.stdout.write(JSON.stringify(rec) + '\n', () => process.exit(0));
	};
	process.on('uncaughtException', (err) => {
		app.error(err);
		finish();
	});
	process.on('unhandledRejection', (err) => {
		app.error(err);
		finish();
	});
	const timer = setTimeout(() => {
		app.error(new Error(`client did not finish in ${opts.timeout} ms`));
		finish();
	}, opts.timeout);
	try {
		await body(app);
	} catch (err) {
		app.error(err);
	}
	clearTimeout(timer);
	finish();
}

// The prompt every script sends; the fake upstreams ignore it.
export const prompt = 'Tell me something, slowly.';
