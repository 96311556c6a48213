// Image folders organised by class (ImageNet / torchvision ImageFolder style), the input of
// `zeroshot` and `probe`:
//
//   DIR/<class name>/<image>.jpg|.jpeg|.png|.webp
//
// The folder names are the class names (what the zero-shot prompts say), sorted by code point so
// class indices are stable across machines. Files directly in DIR, hidden entries (".name") and
// files without an image extension are ignored; a class folder with no image is reported and
// left out; entries named like images that are not regular files (a FIFO would block reading)
// are skipped with a warning. Two listings can be required to share their classes
// (`probe --train` and `--test`).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { IMAGE_EXTENSIONS } from './image.ts';
import { nonFileKind } from '../platform/regular-file.ts';
import { listWithRest } from '../gpu/problem-list.ts';

export interface ClassFolders {
  dir: string;
  /** Class names (folder names), sorted; only folders holding at least one image. */
  classes: string[];
  /** Every image, in class order then file-name order. */
  files: { path: string; label: number }[];
  /** Class folders without images, and image-named entries that are not regular files. */
  warnings: string[];
}

/** Lists `dir`'s class folders; errors name the flag and the folder and say what layout is expected. */
export function listClassFolders(dir: string, flag: string): ClassFolders {
  const layout = `expected ${flag} DIR with one subfolder per class (DIR/<class name>/<image>.jpg|.png|.webp)`;
  if (!existsSync(dir)) throw new Error(`${flag} ${dir}: does not exist; ${layout}`);
  if (!statSync(dir).isDirectory()) throw new Error(`${flag} ${dir}: is a file, not a folder; ${layout}`);
  const folders = readdirSync(dir, { withFileTypes: true })
    .filter((e) => !e.name.startsWith('.') && (e.isDirectory() || (e.isSymbolicLink() && safeIsDir(join(dir, e.name)))))
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const classes: string[] = [];
  const files: ClassFolders['files'] = [];
  const warnings: string[] = [];
  const empty: string[] = [];
  const notFiles: string[] = [];
  for (const name of folders) {
    const sub = join(dir, name);
    const images: string[] = [];
    for (const f of readdirSync(sub).sort()) {
      if (f.startsWith('.') || !IMAGE_EXTENSIONS.includes(extname(f).toLowerCase())) continue;
      let kind: string | null;
      try {
        kind = nonFileKind(statSync(join(sub, f)));
      } catch (e) {
        kind = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'a broken symbolic link' : `unreadable (${(e as Error).message})`;
      }
      if (kind) notFiles.push(`${join(name, f)} (${kind})`);
      else images.push(join(sub, f));
    }
    if (images.length === 0) {
      empty.push(name);
      continue;
    }
    const label = classes.length;
    classes.push(name);
    for (const p of images) files.push({ path: p, label });
  }
  if (empty.length) warnings.push(`${flag} ${dir}: ${empty.length} class folder(s) hold no .jpg/.jpeg/.png/.webp image and are left out: ${listWithRest(empty)}`);
  if (notFiles.length) warnings.push(`${flag} ${dir}: skipping ${notFiles.length} entr${notFiles.length > 1 ? 'ies' : 'y'} named like images that are not regular files: ${listWithRest(notFiles)}`);
  if (classes.length === 0) {
    throw new Error(`${flag} ${dir}: no class folder with images${folders.length ? ` (${folders.length} folder(s), all without images)` : ''}; ${layout}`);
  }
  return { dir, classes, files, warnings };
}

function safeIsDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}
