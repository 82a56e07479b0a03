/**
 * Whether a parsed JSON value nests arrays and objects more than `maxDepth` deep (a
 * scalar is depth 0, `{}` and `[]` are 1). Walks without recursion, so no input can
 * overflow the stack here; JSON.stringify, which every stored value goes through, would.
 */
export function nestsDeeperThan(value: unknown, maxDepth: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [item, depth] = stack.pop()!;
    if (typeof item !== "object" || item === null) continue;
    if (depth + 1 > maxDepth) return true;
    const children = Array.isArray(item) ? item : Object.values(item);
    for (const child of children) if (typeof child === "object" && child !== null) stack.push([child, depth + 1]);
  }
  return false;
}
