//! [`Memo::call_many`]: many calls in one round trip to the store.

use super::Memo;
use crate::core::codec::MemoCodec;
use crate::Result;

impl<C> Memo<C> {
    /// `f(a)` for every `a` of `args`, in order: every key looked up in one
    /// `get_many`, only the misses computed (each distinct argument once,
    /// in order), their results stored in one `put_many`.
    ///
    /// No per-key lease is taken (two processes mapping the same new
    /// arguments at once may both compute them). A cache failure is
    /// handled as in [`Memo::call`]; in strict mode it is returned.
    pub fn try_call_many<A, R, F>(
        &self,
        args: impl IntoIterator<Item = A>,
        mut f: F,
    ) -> Result<Vec<R>>
    where
        C: MemoCodec<A, R>,
        R: Clone,
        F: FnMut(A) -> R,
    {
        let args: Vec<A> = args.into_iter().collect();
        if self.refused.is_some() {
            self.check_refused()?;
            return Ok(self.uncached(args, f));
        }
        // The key of each argument; `None`: its arguments do not encode, so
        // it is computed uncached (as `call` does), the others still are.
        let mut keys: Vec<Option<Vec<u8>>> = Vec::with_capacity(args.len());
        for a in &args {
            match self.codec.encode_key(a) {
                Ok(k) => keys.push(Some(k)),
                Err(e) => {
                    self.failed(e, "encoding the arguments")?;
                    keys.push(None);
                }
            }
        }
        let ns = match self.namespace() {
            Ok(ns) => ns,
            Err(e) => {
                self.failed(e, "opening the cache")?;
                return Ok(self.uncached(args, f));
            }
        };
        // One lookup of the distinct keys.
        let mut distinct: Vec<&[u8]> = Vec::new();
        let mut slot: Vec<Option<usize>> = Vec::with_capacity(keys.len());
        let mut seen = std::collections::HashMap::new();
        for k in &keys {
            slot.push(k.as_ref().map(|k| {
                *seen.entry(k.as_slice()).or_insert_with(|| {
                    distinct.push(k.as_slice());
                    distinct.len() - 1
                })
            }));
        }
        let got = match ns.get_many(&distinct) {
            Ok(got) => got,
            Err(e) if e.is_rejected() => {
                // Reported once; the other entries are still good.
                self.failed(e, "checking a cached entry")?;
                distinct.iter().map(|k| ns.get(k).ok().flatten()).collect()
            }
            Err(e) => {
                self.failed(e, "reading the cache")?;
                vec![None; distinct.len()]
            }
        };
        let mut values: Vec<Option<R>> = got
            .into_iter()
            .map(|v| v.and_then(|b| self.codec.decode_value(&b).ok()))
            .collect();
        let mut fresh: Vec<(usize, Vec<u8>)> = Vec::new();
        // The results of arguments that do not encode, by position.
        let mut unkeyed: Vec<Option<R>> = Vec::new();
        for (n, (a, &i)) in args.into_iter().zip(&slot).enumerate() {
            let Some(i) = i else {
                unkeyed.resize_with(n + 1, || None);
                unkeyed[n] = Some(f(a));
                continue;
            };
            if values[i].is_none() {
                let r = f(a);
                match self.codec.encode_value(&r) {
                    Ok(b) => fresh.push((i, b)),
                    Err(e) => self.failed(e, "encoding a result")?,
                }
                values[i] = Some(r);
            }
        }
        if !fresh.is_empty() {
            let items: Vec<(&[u8], &[u8])> = fresh
                .iter()
                .map(|(i, b)| (distinct[*i], b.as_slice()))
                .collect();
            if let Err(e) = ns.put_many(&items, None) {
                self.failed(e, "storing the results")?;
            }
        }
        let mut counted = vec![false; distinct.len()];
        let fresh_slots: std::collections::HashSet<usize> = fresh.iter().map(|(i, _)| *i).collect();
        Ok(slot
            .into_iter()
            .enumerate()
            .map(|(n, i)| match i {
                Some(i) => {
                    let ran = fresh_slots.contains(&i) && !std::mem::replace(&mut counted[i], true);
                    self.count(ran, true);
                    values[i].clone().expect("computed above")
                }
                None => {
                    self.count(true, true);
                    unkeyed[n].take().expect("computed above")
                }
            })
            .collect())
    }

    /// `f(a)` for every `a` of `args`, without the cache (each a miss).
    fn uncached<A, R>(&self, args: Vec<A>, mut f: impl FnMut(A) -> R) -> Vec<R> {
        args.into_iter()
            .map(|a| {
                self.count(true, true);
                f(a)
            })
            .collect()
    }

    /// [`Memo::try_call_many`], never failing (in strict mode it panics on
    /// a cache failure, as [`Memo::call`] does).
    ///
    /// # Panics
    /// In strict mode, when the cache fails.
    pub fn call_many<A, R, F>(&self, args: impl IntoIterator<Item = A>, f: F) -> Vec<R>
    where
        C: MemoCodec<A, R>,
        R: Clone,
        F: FnMut(A) -> R,
    {
        match self.try_call_many(args, f) {
            Ok(r) => r,
            Err(e) => panic!("picocache (strict mode): {e}"),
        }
    }
}
