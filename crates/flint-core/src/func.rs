//! The bounds user data and user functions must meet to cross to executors.
//!
//! User closures are written with `Fn!(|x: i32| x + k)` (serde_closure): the
//! captured variables become serde fields, so the closure ships as data and the
//! executor runs the identical monomorphised body. Engine-side helper functions
//! (e.g. the `(k, v) -> (k, f(v))` of `map_values`) are plain structs that
//! implement the same traits through [`engine_fn!`].

use std::hash::Hash;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Values that can live in an RDD: they ship, clone and cross threads.
pub trait Data: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Data for T {}

/// Keys of shuffles. `Ord` lets spills be merged by key without a hash-collision
/// scheme; every common key type (integers, strings, tuples, byte arrays) has it.
pub trait Key: Data + Hash + Eq + Ord {}
impl<T: Data + Hash + Eq + Ord> Key for T {}

/// A function that can be shipped to executors (`Fn!` closures and engine structs).
pub trait Func<Args>:
    serde_closure::traits::Fn<Args> + Serialize + DeserializeOwned + Clone + Send + Sync + 'static
{
}
impl<F, Args> Func<Args> for F where
    F: serde_closure::traits::Fn<Args>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Implements serde_closure's `FnOnce`/`FnMut`/`Fn` for an engine struct from an
/// inherent `fn invoke(&self, args) -> out`.
macro_rules! engine_fn {
    (impl[$($g:tt)*] $ty:ty, $args:ty => $out:ty) => {
        impl<$($g)*> serde_closure::traits::FnOnce<$args> for $ty {
            type Output = $out;
            fn call_once(self, args: $args) -> $out {
                self.invoke(args)
            }
        }
        impl<$($g)*> serde_closure::traits::FnMut<$args> for $ty {
            fn call_mut(&mut self, args: $args) -> $out {
                self.invoke(args)
            }
        }
        impl<$($g)*> serde_closure::traits::Fn<$args> for $ty {
            fn call(&self, args: $args) -> $out {
                self.invoke(args)
            }
        }
    };
}
pub(crate) use engine_fn;
