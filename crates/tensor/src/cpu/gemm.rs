//! Matrix products for the CPU ops, through the `gemm` crate (f32 and f64,
//! AVX-512/AVX2/NEON kernels). Strides are in elements, so transposed
//! operands need no copies.

use crate::Element;

/// A strided read-only matrix view: element (r, c) is `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a, T> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `rows x cols` matrix.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major `rows x cols` matrix, seen as `cols x rows`.
    pub fn row_major_t(data: &'a [T], rows: usize, cols: usize) -> Self {
        MatRef { data, rows: cols, cols: rows, rs: 1, cs: cols }
    }

    /// The same matrix transposed (no copy).
    pub fn transposed(self) -> Self {
        MatRef { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Whether a product may use rayon itself. Ops that already run one product
/// per image in parallel pass `Serial`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Serial,
    Rayon,
}

/// `c = a * b` (or `c += a * b` when `accumulate`), with `c` row-major
/// `a.rows x b.cols`. Panics only on a caller's internal bug (mismatched
/// views), never on user data: ops check shapes before they get here.
pub fn matmul<T: Element>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T], accumulate: bool, threads: Threads) {
    matmul_strided(a, b, c, b.cols, accumulate, threads)
}

/// [`matmul`] with `c`'s rows `c_rs` elements apart (`c_rs >= b.cols`):
/// row `r` of the product is `c[r * c_rs..][..b.cols]`, and the elements
/// between rows are left alone.
pub fn matmul_strided<T: Element>(
    a: MatRef<'_, T>,
    b: MatRef<'_, T>,
    c: &mut [T],
    c_rs: usize,
    accumulate: bool,
    threads: Threads,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions");
    assert!(a.fits() && b.fits(), "matmul: view out of bounds");
    assert!(c_rs >= n, "matmul: output rows overlap");
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() >= (m - 1) * c_rs + n, "matmul: output too small");
    if k == 0 {
        if !accumulate {
            c.chunks_mut(c_rs).take(m).for_each(|row| row[..n].iter_mut().for_each(|x| *x = T::zero()));
        }
        return;
    }
    let par = match threads {
        Threads::Serial => gemm::Parallelism::None,
        Threads::Rayon => gemm::Parallelism::Rayon(0),
    };
    // SAFETY: every view was checked to lie inside its slice above, the
    // output slice holds rows of n elements c_rs apart (c_rs >= n, so they
    // are distinct), and the slices do not overlap
    // (`c` is a unique borrow).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}
