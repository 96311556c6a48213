// Bounded lists for messages: an error or warning names at most LIST_LIMIT items and says how
// many more there are, so a file with a million problems still gives a message one can read.
// In the lowest layer (like atomic-file.ts) so every layer that reports problems can use it.

/** How many items a message lists before it says "... and K more". */
export const LIST_LIMIT = 20;

/**
 * The first `limit` items, one per line, each after `bullet`, then "... and K more" when items
 * were left out. Lines after the first start with two spaces: a caller writes
 * `:\n  ${listWithRest(items)}`.
 */
export function listWithRest(items: readonly string[], limit = LIST_LIMIT, bullet = ''): string {
  const shown = items.slice(0, limit).map((item) => bullet + item);
  const rest = items.length - shown.length;
  if (rest > 0) shown.push(`... and ${rest} more`);
  return shown.join('\n  ');
}

/** "a, b, c" with at most `limit` items named, then ", ... and K more". */
export function inlineListWithRest(items: readonly string[], limit = LIST_LIMIT): string {
  const shown = items.slice(0, limit);
  const rest = items.length - shown.length;
  return rest > 0 ? `${shown.join(', ')}, ... and ${rest} more` : shown.join(', ');
}
