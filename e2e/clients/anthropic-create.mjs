// @anthropic-ai/sdk: messages.create with stream: true, iterating the raw
// stream events.
import Anthropic from '@anthropic-ai/sdk';
import { main, prompt } from './lib/run.mjs';

await main('anthropic-create', '@anthropic-ai/sdk', async (app) => {
	const client = new Anthropic({ apiKey: 'sk-ant-test', baseURL: app.base });
	const stream = await client.messages.create({
		model: 'claude-haiku-4-5',
		max_tokens: 1024,
		messages: [{ role: 'user', content: prompt }],
		stream: true,
	});
	for await (const event of stream) {
		if (event.type === 'content_block_delta' && event.delta.type === 'text_delta') {
			app.token(event.delta.text);
		}
	}
	app.done();
});
