// @anthropic-ai/sdk: the messages.stream helper, with its text events and
// the message it assembles.
import Anthropic from '@anthropic-ai/sdk';
import { main, prompt } from './lib/run.mjs';

await main('anthropic-stream', '@anthropic-ai/sdk', async (app) => {
	const client = new Anthropic({ apiKey: 'sk-ant-test', baseURL: app.base });
	const stream = client.messages.stream({
		model: 'claude-haiku-4-5',
		max_tokens: 1024,
		messages: [{ role: 'user', content: prompt }],
	});
	stream.on('text', (delta) => app.token(delta));
	const message = await stream.finalMessage();
	app.final(message.content.filter((b) => b.type === 'text').map((b) => b.text).join(''));
	app.done();
});
