// openai: Chat Completions, streamed (chat.completions.create with stream: true).
import OpenAI from 'openai';
import { main, prompt } from './lib/run.mjs';

await main('openai-chat', 'openai', async (app) => {
	const client = new OpenAI({ apiKey: 'sk-test', baseURL: `${app.base}/v1` });
	const stream = await client.chat.completions.create({
		model: 'gpt-4o-mini',
		messages: [{ role: 'user', content: prompt }],
		stream: true,
	});
	for await (const chunk of stream) {
		const s = chunk.choices[0]?.delta?.content;
		if (s) app.token(s);
	}
	app.done();
});
