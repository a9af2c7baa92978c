// Gradient reversal as a C++ operator: grl_cpp::reverse(Tensor x, Tensor neg_alpha) -> Tensor.
//
// Forward returns a clone: a registered operator whose schema declares a fresh output may not
// alias its input (opcheck's test_schema catches an op that does). The backward multiplies the
// upstream gradient by the stored 0-d `neg_alpha` once. `neg_alpha` is a tensor, not a double,
// so a new alpha never recompiles a torch.compile graph and a CUDA graph replay reads its
// current value. It is kept in saved_data (not save_for_backward), so the backward reads the
// buffer's value at backward time, like a CUDA graph replay does: a set_alpha between a
// forward and its backward applies to that backward instead of failing the saved-tensor
// version check.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

at::Tensor reverse_kernel(const at::Tensor& x, const at::Tensor& neg_alpha) {
  (void)neg_alpha;
  return x.clone();
}

at::Tensor call_below_autograd(const at::Tensor& x, const at::Tensor& neg_alpha) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("grl_cpp::reverse", "")
                       .typed<at::Tensor(const at::Tensor&, const at::Tensor&)>();
  return op.call(x, neg_alpha);
}

class ReverseFunction : public torch::autograd::Function<ReverseFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& neg_alpha) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["neg_alpha"] = neg_alpha;
    return call_below_autograd(x, neg_alpha);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor& grad = grad_outputs[0];
    at::Tensor grad_input;
    if (grad.defined()) {
      grad_input = grad * ctx->saved_data["neg_alpha"].toTensor();
      // Two 0-d operands promote to the wider dtype; the gradient keeps the input's.
      if (grad_input.scalar_type() != grad.scalar_type()) {
        grad_input = grad_input.to(grad.scalar_type());
      }
    }
    return {grad_input, at::Tensor()};
  }
};

at::Tensor reverse_autograd(const at::Tensor& x, const at::Tensor& neg_alpha) {
  return ReverseFunction::apply(x, neg_alpha);
}

}  // namespace

TORCH_LIBRARY(grl_cpp, m) {
  m.def("reverse(Tensor x, Tensor neg_alpha) -> Tensor");
}

TORCH_LIBRARY_IMPL(grl_cpp, CompositeExplicitAutograd, m) {
  m.impl("reverse", reverse_kernel);
}

TORCH_LIBRARY_IMPL(grl_cpp, Autograd, m) {
  m.impl("reverse", reverse_autograd);
}
