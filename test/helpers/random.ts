/**
 * A seeded pseudo-random source (mulberry32): the same seed gives the same sequence, so a failing run
 * of a randomized test can be replayed by its printed seed. Not for anything secret.
 */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed for a randomized test: TEST_SEED when set (to replay a run), else a fresh one to print. */
export function testSeed(): number {
  const given = Number(process.env.TEST_SEED);
  return Number.isInteger(given) && process.env.TEST_SEED ? given : Math.floor(Math.random() * 2 ** 31);
}
