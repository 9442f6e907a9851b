// A small helper for building the page without a framework.
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Partial<HTMLElementTagNameMap[K]> & { dataset?: Record<string, string> } = {},
  ...children: (Node | string | false | null | undefined)[]
): HTMLElementTagNameMap[K] {
  const { dataset, ...rest } = props;
  const node = Object.assign(document.createElement(tag), rest);
  if (dataset) Object.assign(node.dataset, dataset);
  for (const c of children) if (c !== false && c !== null && c !== undefined) node.append(c);
  return node;
}

/** Replaces `parent`'s children with `children`, leaving in place those already there. */
export function reconcile(parent: Element, children: Node[]) {
  for (const c of Array.from(parent.childNodes)) if (!children.includes(c)) c.remove();
  children.forEach((c, i) => {
    if (parent.childNodes[i] !== c) parent.insertBefore(c, parent.childNodes[i] ?? null);
  });
}
