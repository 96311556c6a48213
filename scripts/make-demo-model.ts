// `npm run make-demo-model [-- --out models/demo-clip] [--steps N] ...`
// Pretrains the demo's teacher, a tiny CLIP, from scratch on the demo dataset's real images and
// captions (src/train/demo-model.ts) and writes it as an HF CLIPModel folder with the test
// tokenizer (test/fixtures/clip-tokenizer) and a README.md model card. Deterministic: the same
// flags give the same bytes. The dataset is built (or reused) in a scratch folder.
import { join, relative } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { helpText, parseFlags, positive, UsageError, type FlagSpec } from '../src/cli/args.ts';
import { getDevice } from '../src/gpu/device.ts';
import { ensureDemoDataset } from '../src/io/demo-data.ts';
import { saveClipModel } from '../src/io/hf-save.ts';
import { ClipTokenizer } from '../src/io/tokenizer.ts';
import { DEMO_CLASSES, DEMO_PROMPT, pretrainDemoModel, type DemoModelReport, type RetrievalScores } from '../src/train/demo-model.ts';
import { TRAIN_OPTIONS } from '../src/train/options.ts';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..');
const TOKENIZER = join(ROOT, 'test', 'fixtures', 'clip-tokenizer');

const FLAGS: FlagSpec[] = [
  { name: 'out', type: 'string', default: join(ROOT, 'models', 'demo-clip'), help: 'model folder to write (replaced atomically)' },
  { name: 'data', type: 'string', default: join(tmpdir(), 'genalign-make-demo-model', 'demo-data'), help: 'scratch folder for the demo dataset (built or reused)' },
  { name: 'extra', type: 'int', default: 2048, help: "train on this many real scenes from the demo's generator with seed 1 (never the demo's own pairs); 0: on the demo's train split" },
  { name: 'image-size', type: 'int', default: 32, help: 'image side in pixels (4 x 4 patches of it; the demo images are 64 px)', check: positive },
  { name: 'steps', type: 'int', default: 240, help: 'optimizer steps', check: positive },
  { name: 'batch', type: 'int', default: 64, help: 'pairs per step', check: positive },
  { name: 'lr', type: 'float', default: 2e-3, help: 'peak learning rate (cosine to 0 after warmup)' },
  { name: 'warmup', type: 'int', default: 20, help: 'linear warmup steps' },
  { name: 'seed', type: 'int', default: 0, help: 'seed of the weights, batch order and orientations' },
];

const pct = (x: number | null): string => (x === null ? 'n/a' : `${(100 * x).toFixed(1)}%`);

function scoreLine(name: string, s: RetrievalScores): string {
  return `| ${name} | ${s.n} | ${pct(s.i2t_r1)} | ${pct(s.i2t_r5)} | ${pct(s.t2i_r1)} | ${pct(s.t2i_r5)} | ${pct(s.zeroshot)} |`;
}

/** What the zero-shot column says, in words, when it is no better than chance. */
function zeroShotNote(r: DemoModelReport): string {
  const splits = [r.train, r.heldOut, r.demoTrain].filter((x): x is RetrievalScores => x !== null && x.zeroshot !== null);
  if (splits.length === 0 || splits.some((x) => x.zeroshot! > 1 / DEMO_CLASSES.length + 0.1)) return '';
  return `
Zero-shot accuracy is within 10 points of chance on every split: the model does not tell the shape
kinds apart. It matches scenes to captions by what is easiest to see at this size (colours,
backgrounds), which is what its retrieval numbers measure.
`;
}

function modelCard(r: DemoModelReport, flags: { imageSize: number } & Record<string, number>): string {
  return `# demo-clip: genalign's demo teacher

A tiny CLIP (Hugging Face \`CLIPModel\` format) pretrained from scratch by \`npm run make-demo-model\`
on the **real** images of genalign's synthetic demo dataset generator (procedural scenes of coloured
shapes on simple backgrounds, seen at ${flags.imageSize}×${flags.imageSize} px) and their captions. It knows only those scenes: shapes (${DEMO_CLASSES.join(', ')}), colours,
sizes and backgrounds. It is a toy teacher for the demo, not a general-purpose model.

- vision tower: ${flags.imageSize} px images, ${flags.imageSize / 4} px patches, width 64, 2 layers, 4 heads; text tower: width 64,
  2 layers, 4 heads, the 1118-token test tokenizer (copied here); projection 32.
- trained on ${r.demoTrain ? `${r.trainPairs} other real scenes of the demo's generator (seed 1), none of the demo's own pairs` : `the demo trainer's train split (${r.trainPairs} pairs; its held-out pairs were never seen)`},
  each image in one of its 8 rotations/flips, each caption half of the time read as
  "a photo of a <caption>"; ${r.steps} AdamW steps of symmetric InfoNCE (flags: ${JSON.stringify(flags)}).
- loss ${r.firstLoss.toFixed(3)} → ${r.lastLoss.toFixed(3)}; logit_scale ${r.logitScale.toFixed(3)}.

Retrieval among the pairs of each split (recall at 1 and 5) and zero-shot accuracy on the kind of
the largest shape ("${DEMO_PROMPT}", ${DEMO_CLASSES.length} classes; chance ${pct(1 / DEMO_CLASSES.length)}):

| split | pairs | image→text R@1 | R@5 | text→image R@1 | R@5 | zero-shot |
|---|---|---|---|---|---|---|
${scoreLine('trained on', r.train)}
${scoreLine('demo held-out', r.heldOut)}${r.demoTrain ? '\n' + scoreLine('demo train split (not trained on)', r.demoTrain) : ''}
${zeroShotNote(r)}`;
}

async function main(argv: string[]): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(helpText('make-demo-model', "Pretrain the demo's tiny CLIP teacher on the demo dataset's real images and captions and save it as an HF CLIPModel folder.", FLAGS));
    return 0;
  }
  const f = parseFlags(argv, FLAGS, 'make-demo-model');
  const t0 = performance.now();
  const data = await ensureDemoDataset(join(String(f.data), 'demo'), {});
  const extra = Number(f.extra) > 0 ? await ensureDemoDataset(join(String(f.data), `extra-${f.extra}`), { count: Number(f.extra), seed: 1, variants: 1 }) : null;
  const device = await getDevice();
  const tokenizer = ClipTokenizer.load(TOKENIZER);
  const flags = { imageSize: Number(f['image-size']), steps: Number(f.steps), batch: Number(f.batch), lr: Number(f.lr), warmup: Number(f.warmup), seed: Number(f.seed) };
  const t1 = performance.now();
  const model = await pretrainDemoModel({
    dataDir: data.dir,
    ...(extra ? { extraDataDir: extra.dir } : {}),
    tokenizer,
    device,
    ...flags,
    valFraction: TRAIN_OPTIONS.valFraction.demo as number,
    splitSeed: TRAIN_OPTIONS.seed.default as number,
    logEvery: 50,
    log: (l) => console.error(l),
  });
  const t2 = performance.now();
  try {
    const out = await saveClipModel(String(f.out), { vision: model.vision, text: model.text, logitScale: model.logitScale, tokenizerDir: TOKENIZER, extraFiles: { 'README.md': modelCard(model.report, { extra: Number(f.extra), ...flags }) } });
    const r = model.report;
    console.log(`make-demo-model: wrote ${relative(process.cwd(), out) || out}`);
    console.log(`  pretraining ${((t2 - t1) / 1000).toFixed(1)} s (${flags.steps} steps), total ${((performance.now() - t0) / 1000).toFixed(1)} s; loss ${r.firstLoss.toFixed(3)} -> ${r.lastLoss.toFixed(3)}, logit_scale ${r.logitScale.toFixed(3)}`);
    for (const [name, s] of [['trained-on', r.train], ['demo held-out', r.heldOut], ['demo train split (unseen)', r.demoTrain]] as const) {
      if (s) console.log(`  ${name} (${s.n} pairs): image->text R@1 ${pct(s.i2t_r1)} R@5 ${pct(s.i2t_r5)}; text->image R@1 ${pct(s.t2i_r1)} R@5 ${pct(s.t2i_r5)}; zero-shot ${pct(s.zeroshot)}`);
    }
  } finally {
    model.vision.dispose();
    model.text.dispose();
  }
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof UsageError ? e.message : `make-demo-model: ${(e as Error).message}`);
    process.exit(e instanceof UsageError ? 2 : 1);
  },
);
