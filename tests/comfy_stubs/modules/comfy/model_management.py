"""Stand-in `comfy.model_management`: the cancel check a long node calls. Set `interrupt_processing` to cancel."""

interrupt_processing = False


class InterruptProcessingException(Exception):
    pass


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    if interrupt_processing:
        interrupt_processing = False
        raise InterruptProcessingException()
