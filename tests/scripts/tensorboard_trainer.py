"""A Trainer class whose instance holds a tensorboard SummaryWriter (a thread and a
queue: it does not pickle) beside its model and optimizer; the loop is a method."""
import time
import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter


class Trainer:
    def __init__(self):
        torch.manual_seed(0)
        self.writer = SummaryWriter(log_dir="runs/exp2")
        self.model = nn.Linear(3, 1)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.step = 0

    def train(self, steps):
        for _ in range(steps):
            x = torch.randn(8, 3)
            loss = (self.model(x) - x.sum(1, keepdim=True)).pow(2).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.writer.add_scalar("loss", loss.item(), self.step)
            self.step += 1
            print(f"step {self.step} loss {loss.item():.9f}", flush=True)
            time.sleep(0.03)
        self.writer.close()


if __name__ == "__main__":
    trainer = Trainer()
    trainer.train(20)
    print("final", trainer.model.weight.sum().item())
