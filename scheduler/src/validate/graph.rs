//! The checks of a request's graph: cycles, and whether each template
//! names an ancestor of its task, within a bounded number of steps.

/// Most steps (tasks and edges visited) spent checking that templates name
/// ancestors: a request whose check would take more is rejected
/// (`too_complex`) rather than let it hold the scheduler's loop.
pub const MAX_ANCESTRY_STEPS: usize = 20_000_000;

/// The questions "is `anc` an ancestor of `task`?" of a request's
/// templates, answered together: one walk down from each distinct `anc`
/// over its dependents, so that a thousand tasks naming one ancestor cost
/// one walk, not a thousand.
#[derive(Default)]
pub(super) struct Ancestry {
    /// (anc, task) pairs, in the order asked.
    asked: Vec<(u32, u32)>,
}

impl Ancestry {
    pub(super) fn ask(&mut self, anc: u32, task: u32) {
        self.asked.push((anc, task));
    }

    /// The pairs whose `anc` is not an ancestor of `task`, in the order
    /// asked; `Err(MAX_ANCESTRY_STEPS)` when answering would take more.
    pub(super) fn answer(mut self, deps: &[Vec<u32>]) -> Result<Vec<(u32, u32)>, usize> {
        // Direct dependencies need no walk (their lists count as steps).
        let mut steps = 0usize;
        let mut indirect = Vec::with_capacity(self.asked.len());
        for &(anc, task) in &self.asked {
            steps += deps[task as usize].len();
            if steps > MAX_ANCESTRY_STEPS {
                return Err(MAX_ANCESTRY_STEPS);
            }
            if !deps[task as usize].contains(&anc) {
                indirect.push((anc, task));
            }
        }
        self.asked = indirect;
        if self.asked.is_empty() {
            return Ok(Vec::new());
        }
        let mut dependents = vec![Vec::new(); deps.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d as usize].push(i as u32);
            }
        }
        let mut order: Vec<usize> = (0..self.asked.len()).collect();
        order.sort_by_key(|&k| self.asked[k].0);
        // `reached[n] == anc + 1`: n descends from anc (walked last).
        let mut reached = vec![0u32; deps.len()];
        let mut stack = Vec::new();
        let mut walked = None;
        let mut missing = Vec::new();
        for k in order {
            let (anc, task) = self.asked[k];
            if walked != Some(anc) {
                walked = Some(anc);
                stack.clear();
                stack.push(anc);
                while let Some(n) = stack.pop() {
                    for &d in &dependents[n as usize] {
                        steps += 1;
                        if reached[d as usize] != anc + 1 {
                            reached[d as usize] = anc + 1;
                            stack.push(d);
                        }
                    }
                    if steps > MAX_ANCESTRY_STEPS {
                        return Err(MAX_ANCESTRY_STEPS);
                    }
                }
            }
            if reached[task as usize] != anc + 1 {
                missing.push(k);
            }
        }
        missing.sort_unstable();
        Ok(missing.into_iter().map(|k| self.asked[k]).collect())
    }
}

/// One cycle of the graph (first node repeated at the end), if there is one.
pub(super) fn find_cycle(deps: &[Vec<u32>]) -> Option<Vec<u32>> {
    // Iterative three-colour DFS over dependency edges.
    const WHITE: u8 = 0;
    const GREY: u8 = 1;
    const BLACK: u8 = 2;
    let mut colour = vec![WHITE; deps.len()];
    let mut parent = vec![u32::MAX; deps.len()];
    for root in 0..deps.len() {
        if colour[root] != WHITE {
            continue;
        }
        let mut stack: Vec<(u32, usize)> = vec![(root as u32, 0)];
        colour[root] = GREY;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = deps[node as usize].get(*next) {
                *next += 1;
                match colour[dep as usize] {
                    WHITE => {
                        colour[dep as usize] = GREY;
                        parent[dep as usize] = node;
                        stack.push((dep, 0));
                    }
                    GREY => {
                        // node depends on dep, which is on the stack: walk
                        // the parents back from node to dep.
                        let mut path = vec![node];
                        let mut cur = node;
                        while cur != dep {
                            cur = parent[cur as usize];
                            path.push(cur);
                        }
                        // path runs node, parent, ..., dep; reversed it is
                        // in "depends on" order, closed by node -> dep.
                        path.reverse();
                        path.push(path[0]);
                        return Some(path);
                    }
                    _ => {}
                }
            } else {
                colour[node as usize] = BLACK;
                stack.pop();
            }
        }
    }
    None
}
